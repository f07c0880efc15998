//! The gRPC edge: the only module that knows tonic and prost. It translates
//! CRI requests into `image_service` calls and their results back, and maps
//! errors to gRPC status codes in one place.

pub mod proto;
