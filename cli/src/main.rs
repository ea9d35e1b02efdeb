//! The `souq` binary: parses config, sets up logging and signals, and runs a role.
#![forbid(unsafe_code)]

mod bench;
mod certs;
mod config;
mod metrics_port;
mod node;
mod roles;
mod signals;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;
use config::{Cli, Command, ConfigError};
use tokio_util::sync::CancellationToken;

/// EX_USAGE: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("souq: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    use telemetry::Service::{Agent, ControlPlane, Edge};
    let (services, traces) = match &cli.command {
        Command::Up(a) => (&[Edge, ControlPlane, Agent][..], Some(&a.telemetry)),
        Command::ControlPlane(a) => (&[ControlPlane][..], Some(&a.telemetry)),
        Command::Agent(a) => (&[Agent][..], Some(&a.telemetry)),
        Command::Edge(a) => (&[Edge][..], Some(&a.telemetry)),
        _ => (&[][..], None),
    };
    // The OTLP exporter is a tonic client: it is made inside the runtime, and the guard
    // flushes it before the runtime goes.
    let _telemetry = match runtime.block_on(async { telemetry::init(services, traces) }) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("souq: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        signals::watch(shutdown.clone());
        match cli.command {
            Command::Up(a) => roles::up(a, shutdown).await,
            Command::ControlPlane(a) => roles::control_plane(a, shutdown).await,
            Command::Agent(a) => roles::agent(a, shutdown).await,
            Command::Edge(a) => roles::edge(a, shutdown).await,
            Command::Migrate(a) => roles::migrate(a).await,
            Command::Certs(a) => certs::run(a),
            Command::Node(a) => node::run(a).await,
            Command::Bench(config::BenchCommand::Execute(a)) => bench::execute::run(a).await,
            Command::Bench(config::BenchCommand::Invoke(a)) => bench::invoke::run(a).await,
            Command::Bench(config::BenchCommand::Metering(a)) => bench::metering::run(a).await,
            Command::Bench(config::BenchCommand::Logins(a)) => bench::logins::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("souq: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() { ExitCode::from(EXIT_CONFIG) } else { ExitCode::FAILURE }
        }
    }
}
