//! Generates the etcd v3 gRPC client used by the leader election
//! (`src/leadership/etcd.rs`) from the vendored subset of etcd's protos in
//! `proto/etcd/`, with protox (pure Rust), so no system `protoc` is needed. Client only:
//! this process never serves etcd's API.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        root.join("etcd/etcdserverpb/rpc_subset.proto"),
        root.join("etcd/mvccpb/kv.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
