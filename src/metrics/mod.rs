//! The daemon's Prometheus metrics: one [`Metrics`] owns the registry and
//! every typed metric family, and offers one recording method per event
//! (a pull finished, an RPC answered, a gc pass ran). It is passed around as
//! an `Arc<Metrics>` (never a global), so each test gets isolated counters.
//!
//! Store gauges (images by state, blobs, bytes by part, database size) and the
//! pull queue are computed when scraped, from a [`StoreStatsSource`] (the
//! image service), not kept up to date on every change.
//!
//! Label values stay bounded: results are a closed enum, registry hosts and
//! RPC methods are capped by [`BoundedLabelValues`]; no image name or digest
//! is ever a label value.
//!
//! - `http_server`: the opt-in `/metrics` endpoint (TCP or unix socket).
//! - `daemon_state`: uptime and the last gc / reconcile summary lines, for
//!   `cri-imaged status`.

mod bounded_labels;
mod daemon_state;
pub mod http_server;
mod pull_result;
mod store_stats;

use std::sync::atomic::AtomicU64;
use std::sync::{RwLock, Weak};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use bounded_labels::{BoundedLabelValues, OTHER};
pub use daemon_state::DaemonState;
pub use http_server::{MetricsAddress, MetricsAddressError, MetricsServerError};
pub use pull_result::PullResult;
pub use store_stats::{PullQueueStats, StoreStats, StoreStatsSource};

/// Distinct registry hosts given their own label value; the rest are `other`.
pub const REGISTRY_HOSTS_MAX: usize = 64;
/// Distinct gRPC methods given their own label value; the rest are `other`.
/// The CRI services and the admin service have fewer than 64 together.
pub const RPC_METHODS_MAX: usize = 96;
/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one garbage-collection pass did, in plain fields so the gc module
/// can fill it without knowing the metric types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcRunSummary {
    pub duration_ms: u64,
    pub images_removed: u64,
    pub blobs_removed: u64,
    pub snapshots_removed: u64,
    pub ingests_removed: u64,
    pub leases_expired: u64,
    pub bytes_freed: u64,
    /// Why the pass stopped early, if it did (no secret, one line).
    pub error: Option<String>,
}

impl GcRunSummary {
    /// The line `cri-imaged status` shows.
    pub fn one_line(&self) -> String {
        let mut line = format!(
            "removed {} images, {} blobs, {} snapshots, {} ingests; {} leases expired; \
             {} bytes freed in {} ms",
            self.images_removed,
            self.blobs_removed,
            self.snapshots_removed,
            self.ingests_removed,
            self.leases_expired,
            self.bytes_freed,
            self.duration_ms
        );
        if let Some(error) = &self.error {
            line.push_str("; stopped early: ");
            line.push_str(error);
        }
        line
    }
}

/// What startup reconciliation found, in plain fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileRun {
    pub duration_ms: u64,
    /// Problems found at startup, by kind (`leases_ended`, …), zero or not.
    pub problems_by_kind: Vec<(&'static str, u64)>,
    pub summary_line: String,
}

pub struct Metrics {
    registry: Registry,
    registry_hosts: BoundedLabelValues,
    rpc_methods: BoundedLabelValues,
    pulls: PullFamilies,
    rpc: RpcFamilies,
    store: StoreGauges,
    maintenance: MaintenanceFamilies,
    state: DaemonState,
    source: RwLock<Option<Weak<dyn StoreStatsSource>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PullFinishedLabels {
    registry: String,
    result: PullResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: PullResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    part: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

struct PullFamilies {
    started: Family<RegistryLabels, Counter>,
    finished: Family<PullFinishedLabels, Counter>,
    duration_seconds: Family<ResultLabels, Histogram>,
    downloaded_bytes: Family<RegistryLabels, Counter>,
    skipped_bytes: Family<RegistryLabels, Counter>,
    deduplicated: Family<RegistryLabels, Counter>,
    mirror_fallbacks: Family<RegistryLabels, Counter>,
    running: Gauge,
    queued: Gauge,
}

struct RpcFamilies {
    requests: Family<RpcLabels, Counter>,
    duration_seconds: Family<MethodLabels, Histogram>,
    /// Made once per outcome, so counting a poll allocates nothing.
    busy_polls_ended_by_input: Counter,
    busy_polls_window_passed: Counter,
    busy_poll_seconds: Counter<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

struct StoreGauges {
    images: Family<StateLabels, Gauge>,
    blobs: Gauge,
    snapshots: Gauge,
    unsynced_snapshots: Gauge,
    leases: Gauge,
    ingests: Gauge,
    used_bytes: Family<PartLabels, Gauge>,
    metadata_file_bytes: Gauge,
}

struct MaintenanceFamilies {
    gc_runs: Family<ResultOfRunLabels, Counter>,
    gc_duration_seconds: Histogram,
    gc_reclaimed_objects: Family<KindLabels, Counter>,
    gc_reclaimed_bytes: Counter,
    reconcile_runs: Counter,
    reconcile_duration_seconds: Histogram,
    reconcile_problems: Family<KindLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultOfRunLabels {
    result: String,
}

fn pull_duration_buckets() -> Histogram {
    Histogram::new([
        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ])
}

fn rpc_duration_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 300.0,
    ])
}

fn maintenance_duration_buckets() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered and at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cri_imaged");
        let pulls = PullFamilies {
            started: Family::default(),
            finished: Family::default(),
            duration_seconds: Family::new_with_constructor(pull_duration_buckets),
            downloaded_bytes: Family::default(),
            skipped_bytes: Family::default(),
            deduplicated: Family::default(),
            mirror_fallbacks: Family::default(),
            running: Gauge::default(),
            queued: Gauge::default(),
        };
        registry.register(
            "pulls_started",
            "PullImage requests that asked for a pull, by registry host",
            pulls.started.clone(),
        );
        registry.register(
            "pulls_finished",
            "PullImage requests answered, by registry host and result",
            pulls.finished.clone(),
        );
        registry.register(
            "pull_duration_seconds",
            "Time from a PullImage request to its answer, by result",
            pulls.duration_seconds.clone(),
        );
        registry.register(
            "pull_downloaded_bytes",
            "Bytes of manifests, configs and layers received from registries",
            pulls.downloaded_bytes.clone(),
        );
        registry.register(
            "pull_skipped_bytes",
            "Bytes of blobs not downloaded because they were already stored (whole or partly)",
            pulls.skipped_bytes.clone(),
        );
        registry.register(
            "pulls_deduplicated",
            "PullImage requests that joined an identical pull already in flight",
            pulls.deduplicated.clone(),
        );
        registry.register(
            "registry_mirror_fallbacks",
            "Requests that failed at one endpoint (a mirror) and went on to the next",
            pulls.mirror_fallbacks.clone(),
        );
        registry.register(
            "pulls_running",
            "Distinct pulls in flight, deduplicated requests counted once",
            pulls.running.clone(),
        );
        registry.register(
            "pulls_queued",
            "Pulls waiting for a turn under --pulls-max",
            pulls.queued.clone(),
        );

        let busy_polls: Family<OutcomeLabels, Counter> = Family::default();
        let busy_poll_outcome = |outcome: &str| {
            busy_polls
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_owned(),
                })
                .clone()
        };
        let rpc = RpcFamilies {
            requests: Family::default(),
            duration_seconds: Family::new_with_constructor(rpc_duration_buckets),
            busy_polls_ended_by_input: busy_poll_outcome("input"),
            busy_polls_window_passed: busy_poll_outcome("window_passed"),
            busy_poll_seconds: Counter::default(),
        };
        registry.register(
            "api_busy_polls",
            "Polls of an idle CRI connection instead of sleeping (api.busy_poll_us), \
             by outcome: input (the client sent or hung up) or window_passed",
            busy_polls,
        );
        registry.register(
            "api_busy_poll_seconds",
            "Time spent polling idle CRI connections",
            rpc.busy_poll_seconds.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC requests answered (CRI and admin), by method and status code",
            rpc.requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a gRPC request to the end of its answer, by method",
            rpc.duration_seconds.clone(),
        );

        let store = StoreGauges {
            images: Family::default(),
            blobs: Gauge::default(),
            snapshots: Gauge::default(),
            unsynced_snapshots: Gauge::default(),
            leases: Gauge::default(),
            ingests: Gauge::default(),
            used_bytes: Family::default(),
            metadata_file_bytes: Gauge::default(),
        };
        registry.register(
            "store_images",
            "Image records by state",
            store.images.clone(),
        );
        registry.register("store_blobs", "Verified blobs stored", store.blobs.clone());
        registry.register(
            "store_snapshots",
            "Snapshots recorded",
            store.snapshots.clone(),
        );
        registry.register(
            "store_unsynced_snapshots",
            "Committed snapshots not yet synced to disk",
            store.unsynced_snapshots.clone(),
        );
        registry.register("store_leases", "Leases held", store.leases.clone());
        registry.register(
            "store_ingests",
            "Partial downloads recorded",
            store.ingests.clone(),
        );
        registry.register(
            "store_used_bytes",
            "Bytes used, by part (content, ingests, snapshots)",
            store.used_bytes.clone(),
        );
        registry.register(
            "metadata_file_bytes",
            "Size of the metadata database file",
            store.metadata_file_bytes.clone(),
        );

        let maintenance = MaintenanceFamilies {
            gc_runs: Family::default(),
            gc_duration_seconds: maintenance_duration_buckets(),
            gc_reclaimed_objects: Family::default(),
            gc_reclaimed_bytes: Counter::default(),
            reconcile_runs: Counter::default(),
            reconcile_duration_seconds: maintenance_duration_buckets(),
            reconcile_problems: Family::default(),
        };
        registry.register(
            "gc_runs",
            "Garbage-collection passes, by result (ok, error)",
            maintenance.gc_runs.clone(),
        );
        registry.register(
            "gc_duration_seconds",
            "Duration of garbage-collection passes",
            maintenance.gc_duration_seconds.clone(),
        );
        registry.register(
            "gc_reclaimed_objects",
            "Objects removed by garbage collection, by kind",
            maintenance.gc_reclaimed_objects.clone(),
        );
        registry.register(
            "gc_reclaimed_bytes",
            "Bytes freed by garbage collection",
            maintenance.gc_reclaimed_bytes.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Startup reconciliations",
            maintenance.reconcile_runs.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of startup reconciliations",
            maintenance.reconcile_duration_seconds.clone(),
        );
        registry.register(
            "reconcile_problems",
            "What startup reconciliation found left by a crash, by kind",
            maintenance.reconcile_problems.clone(),
        );

        let build_info: Family<VersionLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "The daemon's version", build_info);

        Metrics {
            registry,
            registry_hosts: BoundedLabelValues::new(REGISTRY_HOSTS_MAX),
            rpc_methods: BoundedLabelValues::new(RPC_METHODS_MAX),
            pulls,
            rpc,
            store,
            maintenance,
            state: DaemonState::default(),
            source: RwLock::new(None),
        }
    }

    /// Where scrape-time gauges come from; held weakly (the source holds
    /// these metrics).
    pub fn set_store_stats_source(&self, source: Weak<dyn StoreStatsSource>) {
        *self
            .source
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(source);
    }

    pub fn state(&self) -> &DaemonState {
        &self.state
    }

    /// The whole registry in the OpenMetrics text format ([`CONTENT_TYPE`]),
    /// store gauges refreshed first.
    pub fn encode(&self) -> String {
        self.refresh_scrape_time_gauges();
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug
        // in a metric's encoding and leaves the text as far as it got.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode the metrics");
        }
        text
    }

    pub fn record_pull_started(&self, registry: &str) {
        self.pulls
            .started
            .get_or_create(&self.registry_labels(registry))
            .inc();
    }

    pub fn record_pull_finished(&self, registry: &str, result: PullResult, elapsed: Duration) {
        self.pulls
            .finished
            .get_or_create(&PullFinishedLabels {
                registry: self.registry_hosts.admit(registry),
                result,
            })
            .inc();
        self.pulls
            .duration_seconds
            .get_or_create(&ResultLabels { result })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_pull_deduplicated(&self, registry: &str) {
        self.pulls
            .deduplicated
            .get_or_create(&self.registry_labels(registry))
            .inc();
    }

    /// Bytes a pull received from `registry`, and bytes it did not need to
    /// because they were stored already.
    pub fn record_pull_bytes(&self, registry: &str, downloaded_bytes: u64, skipped_bytes: u64) {
        let labels = self.registry_labels(registry);
        self.pulls
            .downloaded_bytes
            .get_or_create(&labels)
            .inc_by(downloaded_bytes);
        self.pulls
            .skipped_bytes
            .get_or_create(&labels)
            .inc_by(skipped_bytes);
    }

    pub fn record_mirror_fallbacks(&self, registry: &str, fallbacks: u64) {
        if fallbacks > 0 {
            self.pulls
                .mirror_fallbacks
                .get_or_create(&self.registry_labels(registry))
                .inc_by(fallbacks);
        }
    }

    /// One gRPC request answered. `method` is the request path
    /// (`/runtime.v1.ImageService/PullImage`); `code` the gRPC status code's
    /// canonical name (`OK`, `NOT_FOUND`, …).
    pub fn record_rpc(&self, method: &str, code: &str, elapsed: Duration) {
        let method = self.rpc_method_label(method);
        self.rpc
            .requests
            .get_or_create(&RpcLabels {
                method: method.clone(),
                code: code.to_owned(),
            })
            .inc();
        self.rpc
            .duration_seconds
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// One poll of an idle connection: whether the client's input ended it
    /// (rather than the window passing), and how long it took.
    pub fn record_busy_poll(&self, ended_by_input: bool, spent: Duration) {
        if ended_by_input {
            self.rpc.busy_polls_ended_by_input.inc();
        } else {
            self.rpc.busy_polls_window_passed.inc();
        }
        self.rpc.busy_poll_seconds.inc_by(spent.as_secs_f64());
    }

    /// Counts one gc pass and keeps its summary line for `cri-imaged status`.
    pub fn record_gc(&self, summary: &GcRunSummary) {
        let gc = &self.maintenance;
        let result = if summary.error.is_some() {
            "error"
        } else {
            "ok"
        };
        gc.gc_runs
            .get_or_create(&ResultOfRunLabels {
                result: result.to_owned(),
            })
            .inc();
        gc.gc_duration_seconds
            .observe(Duration::from_millis(summary.duration_ms).as_secs_f64());
        for (kind, count) in [
            ("image", summary.images_removed),
            ("blob", summary.blobs_removed),
            ("snapshot", summary.snapshots_removed),
            ("ingest", summary.ingests_removed),
            ("lease", summary.leases_expired),
        ] {
            gc.gc_reclaimed_objects
                .get_or_create(&KindLabels {
                    kind: kind.to_owned(),
                })
                .inc_by(count);
        }
        gc.gc_reclaimed_bytes.inc_by(summary.bytes_freed);
        self.state.set_last_gc_summary(summary.one_line());
    }

    /// Counts the startup reconciliation and keeps its summary line.
    pub fn record_reconcile(&self, run: &ReconcileRun) {
        let maintenance = &self.maintenance;
        maintenance.reconcile_runs.inc();
        maintenance
            .reconcile_duration_seconds
            .observe(Duration::from_millis(run.duration_ms).as_secs_f64());
        for (kind, count) in &run.problems_by_kind {
            maintenance
                .reconcile_problems
                .get_or_create(&KindLabels {
                    kind: (*kind).to_owned(),
                })
                .inc_by(*count);
        }
        self.state
            .set_last_reconcile_summary(run.summary_line.clone());
    }

    fn registry_labels(&self, registry: &str) -> RegistryLabels {
        RegistryLabels {
            registry: self.registry_hosts.admit(registry),
        }
    }

    /// The method path as a label value if it looks like a gRPC path
    /// (`/package.Service/Method`, short, plain characters) and the cap
    /// allows; `other` otherwise, so a client cannot grow the family.
    fn rpc_method_label(&self, path: &str) -> String {
        let plain = path.len() <= 128
            && path.starts_with('/')
            && path[1..].split('/').count() == 2
            && path[1..]
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'/'));
        if plain {
            self.rpc_methods.admit(path)
        } else {
            OTHER.to_owned()
        }
    }

    fn refresh_scrape_time_gauges(&self) {
        let source = self
            .source
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        let Some(source) = source else {
            return;
        };
        let queue = source.pull_queue_stats();
        self.pulls.running.set(gauge_value(queue.running));
        self.pulls.queued.set(gauge_value(queue.queued));
        let Some(stats) = source.store_stats() else {
            return;
        };
        let store = &self.store;
        for (state, count) in &stats.images_by_state {
            store
                .images
                .get_or_create(&StateLabels {
                    state: (*state).to_owned(),
                })
                .set(gauge_value(*count));
        }
        store.blobs.set(gauge_value(stats.blobs));
        store.snapshots.set(gauge_value(stats.snapshots));
        store
            .unsynced_snapshots
            .set(gauge_value(stats.unsynced_snapshots));
        store.leases.set(gauge_value(stats.leases));
        store.ingests.set(gauge_value(stats.ingests));
        for (part, bytes) in [
            ("content", stats.content_bytes),
            ("ingests", stats.ingest_bytes),
            ("snapshots", stats.snapshot_bytes),
        ] {
            store
                .used_bytes
                .get_or_create(&PartLabels {
                    part: part.to_owned(),
                })
                .set(gauge_value(bytes));
        }
        store
            .metadata_file_bytes
            .set(gauge_value(stats.metadata_file_bytes));
    }
}

/// Gauges are i64; counts and sizes beyond that saturate.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_methods_that_do_not_look_like_grpc_paths_are_labelled_other() {
        let metrics = Metrics::new();
        assert_eq!(
            metrics.rpc_method_label("/runtime.v1.ImageService/PullImage"),
            "/runtime.v1.ImageService/PullImage"
        );
        assert_eq!(metrics.rpc_method_label("/a/b/c"), OTHER);
        assert_eq!(metrics.rpc_method_label("/x/{name=\"y\"}"), OTHER);
        assert_eq!(
            metrics.rpc_method_label(&format!("/a/{}", "b".repeat(200))),
            OTHER
        );
    }

    #[test]
    fn recorded_events_appear_in_the_exposition_with_bounded_labels() {
        let metrics = Metrics::new();
        for host in 0..(REGISTRY_HOSTS_MAX + 3) {
            metrics.record_pull_started(&format!("registry-{host}.example"));
        }
        metrics.record_pull_finished(
            "registry-0.example",
            PullResult::NotFound,
            Duration::from_millis(1500),
        );
        // Durations whose sum is exact in binary floating point.
        metrics.record_busy_poll(true, Duration::from_millis(250));
        metrics.record_busy_poll(true, Duration::from_millis(125));
        metrics.record_busy_poll(false, Duration::from_millis(500));
        metrics.record_gc(&GcRunSummary {
            blobs_removed: 2,
            bytes_freed: 4096,
            ..GcRunSummary::default()
        });
        let text = metrics.encode();
        assert!(
            text.contains("cri_imaged_pulls_started_total{registry=\"other\"} 3"),
            "{text}"
        );
        assert!(text.contains(
            "cri_imaged_pulls_finished_total{registry=\"registry-0.example\",result=\"not_found\"} 1"
        ));
        assert!(
            text.contains("cri_imaged_gc_reclaimed_bytes_total 4096"),
            "{text}"
        );
        assert!(
            text.contains("cri_imaged_api_busy_polls_total{outcome=\"input\"} 2")
                && text.contains("cri_imaged_api_busy_polls_total{outcome=\"window_passed\"} 1")
                && text.contains("cri_imaged_api_busy_poll_seconds_total 0.875"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            metrics.state().last_gc_summary().unwrap(),
            "removed 0 images, 2 blobs, 0 snapshots, 0 ingests; 0 leases expired; \
             4096 bytes freed in 0 ms"
        );
    }
}
