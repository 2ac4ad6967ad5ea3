//! Compiles the minimal etcd v3 API subset in `proto/etcd_min.proto` (client side only).
//! protoc comes vendored, like baton-proto's, so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let file = root.join("etcd_min.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(std::slice::from_ref(&file), std::slice::from_ref(&root))?;
    println!("cargo:rerun-if-changed={}", file.display());
    Ok(())
}
