//! The generated protobuf types and gRPC services of `proto/`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");

        pub use crate::api::list_images_response::ListImagesResponse;

        /// Written by hand: the four `[debug_redact = true]` fields are masked.
        impl std::fmt::Debug for AuthConfig {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                fn mask(value: &str) -> &'static str {
                    if value.is_empty() { "" } else { "<redacted>" }
                }
                f.debug_struct("AuthConfig")
                    .field("username", &self.username)
                    .field("password", &mask(&self.password))
                    .field("auth", &mask(&self.auth))
                    .field("server_address", &self.server_address)
                    .field("identity_token", &mask(&self.identity_token))
                    .field("registry_token", &mask(&self.registry_token))
                    .finish()
            }
        }
    }
}

pub mod cri_imaged {
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("cri_imaged.admin.v1");
        }
    }
}

/// The encoded `FileDescriptorSet` of both files, with options.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
