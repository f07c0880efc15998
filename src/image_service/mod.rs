//! Pull orchestration: what happens between a CRI call and the stores. This
//! module knows no tonic, redb or HTTP types; it drives the registry client,
//! the content store and (as it lands) the unpacker and snapshot store.
//!
//! Today it holds the content half of a pull (`fetch`); the lease, the final
//! "ready" transaction and the CRI-facing `ImageService` follow.

pub mod fetch;
