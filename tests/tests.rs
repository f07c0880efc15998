//! The integration test binary. Each module tests one boundary of the daemon
//! through its public API:
//!
//! - `metadata_store`: transactions, indexes, concurrency and integrity of the
//!   metadata database.
//! - `migrations`: the golden databases of every released schema open, upgrade
//!   and read back record by record.
//! - `daemon`: the real `cri-imaged` binary starts, refuses bad stores, and stops
//!   on SIGTERM.

mod support;

mod daemon;
mod metadata_store;
mod migrations;
