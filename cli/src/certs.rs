//! The internal gRPC links' certificates: `souq certs` issues one for a role from a CA it
//! keeps in a directory (made on first use), `souq up` does the same in its data dir, and
//! the split roles load theirs from `--tls-cert`, `--tls-key` and `--tls-ca`
//! (`config::GrpcTlsArgs`).
use std::path::Path;

use souq_proto::tls::{Pki, Role, Transport};

use crate::config::{CertsArgs, ConfigError};

/// How long a certificate `souq up` issues is valid; it issues fresh ones at every start.
const UP_DAYS: u32 = 365;

/// `souq certs`.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let role: Role = args.role.parse().map_err(|e| ConfigError(format!("invalid value for --role: {e}")))?;
    let name = args.name.clone().unwrap_or_else(|| role.as_str().to_owned());
    let pki = Pki::open_or_create(&args.dir).map_err(|e| ConfigError(format!("invalid value for --dir: {e}")))?;
    let files = pki.issue(role, &name, args.days).map_err(|e| ConfigError(format!("invalid value for --name or --days: {e}")))?;
    println!("--tls-cert {} --tls-key {} --tls-ca {}", files.cert.display(), files.key.display(), files.ca.display());
    Ok(())
}

/// The transports of `souq up`'s three roles, from the CA in `<data dir>/tls` (made on
/// first start) and certificates issued afresh at each start, with the keys kept.
pub fn up(data_dir: &Path) -> anyhow::Result<[Transport; 3]> {
    let pki = Pki::open_or_create(&data_dir.join("tls")).map_err(anyhow::Error::msg)?;
    let load = |role: Role| pki.issue(role, role.as_str(), UP_DAYS).and_then(|f| f.load()).map_err(anyhow::Error::msg);
    Ok([load(Role::ControlPlane)?, load(Role::Agent)?, load(Role::Edge)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GrpcTlsArgs;

    fn args(dir: &Path, role: &str) -> CertsArgs {
        CertsArgs { dir: dir.to_owned(), role: role.into(), name: None, days: 30 }
    }

    #[test]
    fn certs_issues_a_certificate_each_role_loads_and_no_other_does() {
        let dir = std::env::temp_dir().join(format!("souq-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        run(args(&dir, "edge")).expect("issued");
        let files = |name: &str| GrpcTlsArgs {
            tls_cert: Some(dir.join(format!("{name}.pem"))),
            tls_key: Some(dir.join(format!("{name}.key"))),
            tls_ca: Some(dir.join("ca.pem")),
            insecure_grpc: false,
        };
        assert_eq!(files("edge").transport(Role::Edge).expect("an edge certificate").role(), Some(Role::Edge));
        let refused = files("edge").transport(Role::Agent).expect_err("an edge certificate for an agent");
        assert!(refused.0.contains("--tls-cert"), "{refused}");
        assert!(run(args(&dir, "admin")).is_err());
        // Neither certificates nor --insecure-grpc, or both: refused.
        let none = GrpcTlsArgs { tls_cert: None, tls_key: None, tls_ca: None, insecure_grpc: false };
        assert!(none.transport(Role::Edge).is_err());
        assert!(GrpcTlsArgs { insecure_grpc: true, ..files("edge") }.transport(Role::Edge).is_err());
        assert!(matches!(GrpcTlsArgs { insecure_grpc: true, ..none }.transport(Role::Edge), Ok(Transport::Insecure)));
        // `souq up` makes its CA once and reuses it.
        let up_dir = dir.join("up");
        up(&up_dir).expect("first start");
        let ca = std::fs::read(up_dir.join("tls/ca.pem")).expect("ca");
        let [cp, agent, edge] = up(&up_dir).expect("second start");
        assert_eq!(std::fs::read(up_dir.join("tls/ca.pem")).expect("ca"), ca);
        assert_eq!([cp.role(), agent.role(), edge.role()], [Some(Role::ControlPlane), Some(Role::Agent), Some(Role::Edge)]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
