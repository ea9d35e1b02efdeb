//! Compiles the .proto files in pure Rust (protox), so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "souq/accounts/v1/accounts.proto",
        "souq/agent/v1/agent.proto",
        "souq/apis/v1/apis.proto",
        "souq/execute/v1/execute.proto",
        "souq/market/v1/market.proto",
        "souq/metering/v1/metering.proto",
        "souq/nodes/v1/nodes.proto",
        "souq/registry/v1/registry.proto",
        "souq/routes/v1/routes.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
