//! Startup and shutdown order of the daemon.
//!
//! Start: create the root, open and migrate the metadata store (refusing a
//! corrupted or newer-schema file), record a new boot, then serve until told to
//! stop. Later issues slot reconciliation, background gc and the CRI socket into
//! this order, before the socket opens; shutdown runs it in reverse.

use std::future::Future;

use crate::config::Config;
use crate::metadata::{MetadataError, MetadataStore, OpenError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error("cannot create root directory {path}: {source}")]
    CreateRoot {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    OpenMetadata(#[from] OpenError),
    #[error("cannot record the daemon boot: {0}")]
    BeginBoot(#[source] MetadataError),
}

/// A started daemon: its store is open and its boot recorded.
pub struct Daemon {
    pub config: Config,
    pub metadata: MetadataStore,
    pub boot_id: String,
}

impl Daemon {
    pub fn start(config: Config) -> Result<Daemon, DaemonError> {
        std::fs::create_dir_all(&config.root).map_err(|source| DaemonError::CreateRoot {
            path: config.root.clone(),
            source,
        })?;
        let started = std::time::Instant::now();
        let (metadata, report) = MetadataStore::open(&config.metadata_path())?;
        let boot_id = metadata.begin_boot().map_err(DaemonError::BeginBoot)?;
        tracing::info!(
            root = %config.root.display(),
            boot_id = %boot_id,
            created = report.created,
            found_schema_version = report.found_schema_version,
            migration_steps_applied = report.migration_steps_applied,
            repaired_after_unclean_shutdown = report.repaired_after_unclean_shutdown,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "metadata store open"
        );
        Ok(Daemon {
            config,
            metadata,
            boot_id,
        })
    }

    /// Serves until `shutdown` completes, then closes the store.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!(boot_id = %self.boot_id, "shutting down");
        drop(self.metadata);
    }
}
