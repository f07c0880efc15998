//! Compiles `proto/` with protox (a pure-Rust protobuf compiler: no system
//! `protoc`) and generates the prost messages and tonic services.

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: [&str; 2] = ["runtime/v1/api.proto", "cri_imaged/admin/v1/admin.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{file}");
    }
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    // prost-build ignores `[debug_redact = true]`: AuthConfig's Debug is written
    // by hand (src/api/proto.rs) so that no secret is ever printed.
    tonic_prost_build::configure()
        // prost's codec, reserving each message's length before encoding it.
        .codec_path("crate::api::codec::ReservingProstCodec")
        .build_server(true)
        .build_client(true)
        .skip_debug([".runtime.v1.AuthConfig"])
        // Written by hand (src/api/list_images_response.rs): the daemon sends
        // a listing it encoded earlier as it is.
        .extern_path(
            ".runtime.v1.ListImagesResponse",
            "crate::api::list_images_response::ListImagesResponse",
        )
        .compile_fds(descriptors)?;

    // The encoded descriptor set, options kept (prost-types drops debug_redact),
    // for the wire-compatibility test.
    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_imports(true).open_files(PROTO_FILES)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    Ok(())
}
