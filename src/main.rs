//! The `cri-imaged` binary: the daemon (`serve`) and its clients. Parses flags,
//! sets up logging, and hands over to the library; `anyhow` is used only here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use cri_imaged::cli::ClientCommand;
use cri_imaged::config::{self, Config, RawConfig};
use cri_imaged::daemon::Daemon;

#[derive(Parser, Debug)]
#[command(name = "cri-imaged", version, about = "Kubernetes CRI image service")]
struct Cli {
    /// Log format (default: text, or `log.format` of the config file).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon.
    Serve {
        /// State directory (default: /var/lib/cri-imaged as root, a per-user directory otherwise).
        #[arg(long)]
        root: Option<PathBuf>,
        /// The unix socket to serve on (default: /run/cri-imaged/cri-imaged.sock as root).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// containerd-compatible certs.d directory (default: /etc/cri-imaged/certs.d as root).
        #[arg(long = "hosts-dir")]
        hosts_directory: Option<PathBuf>,
        /// Pulls running at once: 0 = unlimited (default), 1 = one at a time
        /// (the kubelet's serialized mode).
        #[arg(long = "pulls-max")]
        pulls_max: Option<usize>,
        /// TOML config file (default: /etc/cri-imaged/config.toml as root, if
        /// it exists). Flags override its values.
        #[arg(long = "config", value_name = "FILE")]
        config_file: Option<PathBuf>,
        /// Serve Prometheus metrics at /metrics on this TCP address
        /// (127.0.0.1:9464) or unix socket (an absolute path); off by default.
        #[arg(long = "metrics-addr", value_name = "ADDRESS")]
        metrics_address: Option<cri_imaged::metrics::MetricsAddress>,
    },
    /// Check the store offline (stop the daemon first); exit 1 if problems are found.
    Fsck(cri_imaged::cli::FsckArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    cri_imaged::fail_point::configure_from_environment();
    let log_format = cli.log_format.map(|format| match format {
        LogFormat::Text => config::LogFormat::Text,
        LogFormat::Json => config::LogFormat::Json,
    });
    match cli.command {
        Command::Serve {
            root,
            socket,
            hosts_directory,
            pulls_max,
            config_file,
            metrics_address,
        } => serve(RawConfig {
            root,
            socket,
            hosts_directory,
            pulls_max,
            config_file,
            log_format,
            metrics_address,
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Fsck(args) => Ok(cri_imaged::cli::run_fsck(args)),
        Command::Client(command) => {
            init_logging(log_format.unwrap_or(config::LogFormat::Text), "info");
            run_client(command)
        }
    }
}

/// A client subcommand, on a single-threaded runtime: it makes one call at a
/// time. Its error is one line on stderr and exit code 1.
fn run_client(command: ClientCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(cri_imaged::cli::run(command)) {
        Ok(exit_code) => Ok(exit_code),
        Err(error) => {
            eprintln!("cri-imaged: {}", error.report());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// How long, after the server stopped, blocking work (an extraction of an
/// aborted pull) may delay the exit. What it leaves is reconciled at startup.
const RUNTIME_SHUTDOWN_TIMEOUT_MS: u64 = 2_000;

fn serve(raw: RawConfig) -> anyhow::Result<()> {
    // Before any thread exists (see the module's comment for the figures).
    cri_imaged::memory::use_one_heap_arena();
    let config = Config::from_raw(raw).context("invalid configuration")?;
    init_logging(config.log_format, &config.log_level);
    if let Some(path) = &config.config_file {
        tracing::info!(config_file = %path.display(), "configuration read");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let daemon = Daemon::start(config)?;
        daemon.run(shutdown_signal()).await?;
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(
        RUNTIME_SHUTDOWN_TIMEOUT_MS,
    ));
    served
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

fn init_logging(format: config::LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRI_IMAGED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log pipe that closes must not take the daemon down: the default
        // reports write failures with eprintln!, which panics on a closed stderr.
        .log_internal_errors(false);
    match format {
        config::LogFormat::Text => builder.init(),
        config::LogFormat::Json => builder.json().init(),
    }
}
