//! Generates the gRPC code for `proto/honeydew/v1/*.proto` with tonic + prost, and the
//! encoded descriptor set that the reflection service serves (so `grpcurl` needs no
//! .proto files).
//!
//! Needs `protoc` (Debian package `protobuf-compiler`, installed by `scripts/setup.sh`);
//! set `PROTOC` to use another one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from("../../proto");
    let files = ["queue", "schedules", "plugins", "proxies"]
        .map(|name| proto_root.join(format!("honeydew/v1/{name}.proto")));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=../../proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("honeydew_descriptor.bin"))
        .compile_protos(&files, &[proto_root])
        .map_err(|err| {
            format!(
                "cannot compile the .proto files: {err}\n\
                 protoc is needed: install it with `apt-get install protobuf-compiler` \
                 (or run scripts/setup.sh), or point PROTOC at a protoc binary"
            )
            .into()
        })
}
