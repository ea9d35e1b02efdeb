//! Compiles the .proto files in pure Rust (protox), so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "souq/agent/v1/agent.proto",
        "souq/registry/v1/registry.proto",
        "souq/platform/v1/platform.proto",
        "souq/routes/v1/routes.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
