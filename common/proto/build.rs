//! Compiles `proto/ferry/v1/*.proto` into `OUT_DIR`.

use std::path::PathBuf;

fn main() {
    let proto_root = PathBuf::from("../../proto");
    println!("cargo:rerun-if-changed=../../proto");
    if std::env::var_os("PROTOC").is_none() && which_protoc().is_none() {
        println!(
            "cargo:warning=protoc not found: install it with `apt-get install protobuf-compiler` \
             (or `make deps`), or set PROTOC to its path"
        );
    }
    let files = [
        proto_root.join("ferry/v1/state.proto"),
        proto_root.join("ferry/v1/control.proto"),
    ];
    if let Err(error) = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&files, &[proto_root])
    {
        panic!("failed to compile ferry protos: {error}");
    }
}

fn which_protoc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("protoc"))
        .find(|candidate| candidate.is_file())
}
