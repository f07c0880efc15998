//! The integration test binary. Each module tests one boundary of the daemon
//! through its public API:
//!
//! - `metadata_store`: transactions, indexes, concurrency and integrity of the
//!   metadata database.
//! - `registry_faults`: pulls through a fault-injecting proxy in front of the
//!   real registry: bad manifests, bad blobs, redirects, bad token answers,
//!   stalls, retries, mirror fallback and resumption with Range.
//! - `registry_pull`: pulls from the real Debian registry into the content
//!   store, with every auth form, TLS through certs.d, mirrors and bad blobs.
//! - `proto_wire`: our proto against an independent transcription of the
//!   CRI fact sheet (field numbers, types, options, services).
//! - `migrations`: the golden databases of every released schema open, upgrade
//!   and read back record by record.
//! - `cli`: the client subcommands of the real binary (`pull`, `images`,
//!   `inspect`, `rmi`, `fsinfo`, `version`) against the real daemon and registry.
//! - `content_store`: verified ingest, cleanup of bad blobs, resumption and
//!   deduplication of downloads.
//! - `cri_socket`: the real daemon over its unix socket with the generated CRI
//!   clients: pull, list, status, remove, fs info, version, status, errors;
//!   and raw HTTP/2 frames carrying gRPC C-core's percent-encoded authority.
//! - `pull_progress`: the admin PullWithProgress stream over the real daemon's
//!   socket: event order, byte counts, joined pulls, reused layers, errors.
//! - `config_file`: the real daemon started with `--config`: pinned patterns,
//!   runtime handler platforms, serialized pulls, deadline, minimum throughput,
//!   and bad files refused naming the key.
//! - `daemon`: the real `cri-imaged` binary starts, refuses bad stores, and stops
//!   on SIGTERM.
//! - `gc`: garbage collection and leases with the real daemon and registry:
//!   removal reclaims exactly what only the removed image used, within
//!   seconds; `cri-imaged gc` and `cri-imaged leases`.
//! - `snapshot_sync`: committed snapshots synced in the background; a daemon
//!   restart syncs what was left, a reboot (the kernel boot id changing)
//!   drops it and the images are pulled and unpacked again.
//! - `metrics`: `serve --metrics-addr` scraped and parsed after real pulls,
//!   request ids in the JSON log, `cri-imaged status`, no credential in any
//!   log line or metric.

mod support;

mod cli;
mod config_file;
mod content_store;
mod cri_socket;
mod daemon;
mod drills;
mod fsck;
mod gc;
mod metadata_store;
mod metrics;
mod migrations;
mod proto_wire;
mod pull_progress;
mod registry_faults;
mod registry_pull;
mod snapshot_sync;
