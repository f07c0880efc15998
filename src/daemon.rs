//! Startup and shutdown order of the daemon.
//!
//! Start: create the root, open and migrate the metadata store (refusing a
//! corrupted or newer-schema file), record a new boot, open the content and
//! snapshot stores, reconcile what a crash left (recorded in the metrics),
//! build the image service, bind the metrics endpoint if `--metrics-addr` asks
//! for one, bind the socket (replacing a stale one only if nothing answers on
//! it), then serve, with the background gc worker running next to the server.
//! Shutdown runs in reverse: stop accepting, let calls in flight finish for
//! the grace period, abort the pulls still running (what they stored stays
//! under their leases; their images were never marked ready), stop the gc
//! worker after its pass in progress and the metrics endpoint, close the
//! stores.

use std::future::Future;
use std::sync::Arc;

use crate::api;
use crate::config::Config;
use crate::content_store::{ContentError, ContentLimits, ContentStore};
use crate::gc::{GarbageCollector, GcPaths, GcSettings, PassTrigger};
use crate::image_service::{ImageService, ImageServiceParts, PinnedImages, PullSettings};
use crate::metadata::{MetadataError, MetadataStore, OpenError};
use crate::metrics::http_server::MetricsListener;
use crate::metrics::{Metrics, MetricsServerError, ReconcileRun};
use crate::registry::hosts::HostsDirectory;
use crate::registry::{RegistryClient, RegistryConfig};
use crate::snapshot_store::{SnapshotError, SnapshotStore};

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
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshots(#[from] SnapshotError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error("startup reconciliation failed: {0}")]
    Reconcile(#[from] crate::reconcile::ReconcileError),
    #[error("the startup gc pass failed: {0}")]
    StartupGc(#[from] crate::gc::GcError),
    #[error(transparent)]
    Metrics(#[from] MetricsServerError),
}

/// How long connections may take to close once the pulls still running at
/// the end of the shutdown grace period were aborted.
const CONNECTIONS_DRAIN_AFTER_ABORT_MS: u64 = 2_000;

/// A started daemon: stores open, boot recorded, socket bound.
pub struct Daemon {
    pub config: Config,
    pub boot_id: String,
    service: Arc<ImageService>,
    gc: Arc<GarbageCollector>,
    snapshots: Arc<SnapshotStore>,
    listener: tokio::net::UnixListener,
    metrics: Arc<Metrics>,
    metrics_listener: Option<MetricsListener>,
}

impl Daemon {
    /// Must run inside a tokio runtime (the socket is registered with it).
    pub fn start(config: Config) -> Result<Daemon, DaemonError> {
        std::fs::create_dir_all(&config.root).map_err(|source| DaemonError::CreateRoot {
            path: config.root.clone(),
            source,
        })?;
        let started = std::time::Instant::now();
        let metrics = Arc::new(Metrics::new());
        let (metadata, report) = MetadataStore::open(&config.metadata_path())?;
        let metadata = Arc::new(metadata);
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
        let content = Arc::new(ContentStore::open(
            config.content_directory(),
            metadata.clone(),
            ContentLimits::default(),
        )?);
        let snapshots = Arc::new(SnapshotStore::open_for_kernel_boot(
            config.snapshots_directory(),
            metadata.clone(),
            crate::snapshot_store::sync::kernel_boot_id(&config.kernel_boot_id_file),
        )?);
        let reconciled = crate::reconcile::reconcile(
            &metadata,
            &snapshots,
            &crate::fsck::StoreLayout::under_root(&config.root),
            &boot_id,
            config.gc_reconcile_grace_period_ms,
        )?;
        metrics.record_reconcile(&ReconcileRun {
            duration_ms: reconciled.elapsed_ms,
            problems_by_kind: reconciled.problems_by_kind(),
            summary_line: reconciled.one_line(),
        });
        let mut settings = PullSettings::default();
        settings.limits.pulls_max = config.pulls_max;
        settings.limits.pulls_queued_max = config.pulls_queued_max;
        settings.fetch.layer_downloads_max = config.layer_downloads_max;
        settings.limits.layer_downloads_max = config.layer_downloads_max;
        settings.limits.extractions_max = config.extractions_max;
        settings.pull_deadline_ms = config.pull_deadline_ms;
        settings.runtime_handlers = config.runtime_handlers.clone();
        if !settings.unpack.privileged_whiteouts {
            tracing::warn!(
                "running without root: layers are unpacked with the unprivileged overlay \
                 convention (user.overlay.* xattrs, mount with -o userxattr), owners are not \
                 applied and device nodes are refused"
            );
        }
        let registry = RegistryClient::new(
            RegistryConfig {
                progress_timeout_ms: config.progress_timeout_ms,
                min_throughput: config.min_throughput,
                ..RegistryConfig::default()
            },
            Box::new(HostsDirectory::new(config.hosts_directory.clone())),
        );
        let gc = Arc::new(GarbageCollector::new(
            metadata.clone(),
            GcPaths {
                content_directory: config.content_directory(),
                snapshots_directory: config.snapshots_directory(),
                trash_directory: config.root.join("gc-trash"),
            },
            GcSettings {
                schedule_interval_ms: config.gc_interval_ms,
                ..GcSettings::default()
            },
        ));
        gc.set_metrics(metrics.clone());
        // What reconciliation marked and any file a crash left unnamed go
        // now, before clients come; what the grace lease holds stays.
        gc.collect(PassTrigger::Startup)?;
        let service = Arc::new(ImageService::new(ImageServiceParts {
            gc: gc.clone(),
            metadata,
            content,
            snapshots: snapshots.clone(),
            registry,
            pinned: PinnedImages::new(config.pinned_images.clone()),
            settings,
            boot_id: boot_id.clone(),
            metrics: metrics.clone(),
        }));
        let store_stats_source: Arc<dyn crate::metrics::StoreStatsSource> = service.clone();
        metrics.set_store_stats_source(Arc::downgrade(&store_stats_source));
        let metrics_listener = match &config.metrics_address {
            Some(address) => {
                let listener = MetricsListener::bind(address)?;
                tracing::info!(address = %listener.local_address(), "serving metrics");
                Some(listener)
            }
            None => None,
        };
        let listener = api::bind_socket(&config.socket)?;
        tracing::info!(socket = %config.socket.display(), "listening");
        Ok(Daemon {
            config,
            boot_id,
            service,
            gc,
            snapshots,
            listener,
            metrics,
            metrics_listener,
        })
    }

    /// Serves until `shutdown` completes; then stops accepting, lets calls in
    /// flight finish for `shutdown_grace_period_ms`, and aborts the pulls
    /// still running after that (their callers get `Unavailable`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let socket = self.config.socket.clone();
        // One shutdown, two servers: the gRPC one is told through `shutdown`,
        // the metrics one through this channel.
        let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
        let metrics_server = self.metrics_listener.map(|listener| {
            let mut metrics_stopped = metrics_stopped;
            tokio::spawn(listener.serve(self.metrics, async move {
                let _ = metrics_stopped.wait_for(|stopped| *stopped).await;
            }))
        });
        let (stop_gc, gc_stopped) = tokio::sync::watch::channel(false);
        let gc_worker = crate::gc::worker::spawn_worker(self.gc, gc_stopped);
        let (stop_sync, sync_stopped) = tokio::sync::watch::channel(false);
        let sync_worker = crate::snapshot_store::sync::spawn_sync_worker(
            self.snapshots,
            std::time::Duration::from_millis(self.config.snapshot_sync_delay_ms),
            sync_stopped,
        );
        let grace_period = std::time::Duration::from_millis(self.config.shutdown_grace_period_ms);
        let (shutdown_started, mut shutdown_seen) = tokio::sync::watch::channel(false);
        let boot_id = self.boot_id.clone();
        let signalled = async move {
            shutdown.await;
            let _ = stop_metrics.send(true);
            tracing::info!(
                boot_id = %boot_id,
                grace_period_ms = grace_period.as_millis() as u64,
                "shutting down"
            );
            let _ = shutdown_started.send(true);
        };
        let served = api::serve(
            self.listener,
            self.service.clone(),
            std::time::Duration::from_micros(self.config.busy_poll_us),
            signalled,
        );
        tokio::pin!(served);
        let grace_over = async {
            if shutdown_seen.wait_for(|started| *started).await.is_err() {
                // The server ended on its own: no grace period to count.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace_period).await;
        };
        let served = tokio::select! {
            served = &mut served => served,
            () = grace_over => {
                let aborted = self.service.abort_pulls();
                tracing::warn!(
                    aborted_pulls = aborted,
                    "grace period over: aborting the pulls still running"
                );
                // The aborted calls answer at once; a client that does not
                // read them (or never acknowledges the HTTP/2 goaway) must
                // not keep the daemon up.
                let drain = std::time::Duration::from_millis(CONNECTIONS_DRAIN_AFTER_ABORT_MS);
                match tokio::time::timeout(drain, served).await {
                    Ok(served) => served,
                    Err(_elapsed) => {
                        tracing::warn!(
                            drain_ms = CONNECTIONS_DRAIN_AFTER_ABORT_MS,
                            "connections still open after the pulls were aborted; closing them"
                        );
                        Ok(())
                    }
                }
            }
        };
        if let Some(metrics_server) = metrics_server
            && let Err(error) = metrics_server.await
        {
            tracing::warn!(%error, "the metrics server ended abnormally");
        }
        // The worker stops between passes: a pass in progress finishes first.
        let _ = stop_gc.send(true);
        if let Err(error) = gc_worker.await {
            tracing::warn!(%error, "the gc worker failed");
        }
        // Last, after every pull ended: its final sync leaves nothing unsynced.
        let _ = stop_sync.send(true);
        if let Err(error) = sync_worker.await {
            tracing::warn!(%error, "the snapshot sync worker failed");
        }
        if let Err(error) = std::fs::remove_file(&socket)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %socket.display(), %error, "cannot remove the socket");
        }
        tracing::info!(boot_id = %self.boot_id, "stopped");
        Ok(served?)
    }
}
