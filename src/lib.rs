//! cri-imaged: a Kubernetes CRI image service whose whole state (names, images,
//! blobs, snapshots, leases) lives in one ACID database.
//!
//! Data flow, where an arrow means "calls" and nothing calls back up the chain:
//!
//! ```text
//! main ──► daemon ──► metadata (redb)
//!           (api, image_service, registry, content_store, unpack,
//!            snapshot_store, gc and reconcile join as they land)
//! ```
//!
//! `reference` and `oci` are value types that every layer shares and that do
//! no I/O. ARCHITECTURE.md has the map and the invariants.

pub mod api;
pub mod cli;
pub mod config;
pub mod content_store;
pub mod daemon;
pub mod durable_fs;
pub mod fail_point;
pub mod fsck;
pub mod gc;
pub mod image_service;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod oci;
pub mod reconcile;
pub mod reference;
pub mod registry;
pub mod snapshot_store;
pub mod unpack;
