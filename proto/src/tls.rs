//! Mutual TLS on every internal gRPC connection: one CA, and one role in each certificate
//! (the DNS name `<role>.souq.internal`). Servers check the caller's role per service,
//! clients check the role of the server they dial, and a node's identity is its key.
//! Plain text only when the operator asks for it (`--insecure-grpc`).
use std::{fmt, path::Path, str::FromStr, sync::Arc, time::Duration};

use rustls::{
    RootCertStore,
    client::{verify_server_cert_signed_by_trust_anchor, verify_server_name},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::ParsedCertificate,
};
use tonic::{
    Request, Status,
    transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig},
};

use crate::{Kind, WireError};

mod issue;

pub use issue::{Pki, TlsFiles};

/// The DNS domain under which certificates name their role.
pub const DOMAIN: &str = "souq.internal";
/// Longest a TLS handshake may take before the server drops the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest PEM file read (a certificate chain or a key).
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// A role of the cluster, as its certificate names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The control plane: serves every control service, calls the agents.
    ControlPlane,
    /// A node agent: calls `Registry`, serves `Agent`.
    Agent,
    /// An edge: calls the edge-facing services and the agents' data path.
    Edge,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::ControlPlane, Role::Agent, Role::Edge];

    /// `control-plane`, `agent` or `edge`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Agent => "agent",
            Role::Edge => "edge",
        }
    }

    /// The name a certificate of this role is valid for: `<role>.souq.internal`.
    pub fn dns_name(self) -> String {
        format!("{}.{DOMAIN}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| "must be control-plane, agent or edge".to_owned())
    }
}

/// The roles a certificate is valid for.
fn roles_of(cert: &ParsedCertificate<'_>) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|r| ServerName::try_from(r.dns_name()).is_ok_and(|n| verify_server_name(cert, &n).is_ok()))
        .collect()
}

/// One role's TLS material: its certificate and key, and the cluster's CA.
pub struct Tls {
    role: Role,
    identity: Identity,
    ca: Certificate,
}

/// How a role speaks gRPC with the others: mutual TLS, or plain text.
#[derive(Clone, Default)]
pub enum Transport {
    /// Mutual TLS with this role's certificate.
    Tls(Arc<Tls>),
    /// Plain text: the library default; the `souq` binary allows it only with
    /// `--insecure-grpc`.
    #[default]
    Insecure,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        match self {
            Transport::Tls(t) => write!(f, "Tls({})", t.role),
            Transport::Insecure => f.write_str("Insecure"),
        }
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut buf).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{what} {}: larger than {MAX_PEM_BYTES} bytes", path.display()));
    }
    Ok(buf)
}

impl Transport {
    /// Loads a role's certificate (`cert`, PEM, leaf first), its key and the CA, and
    /// checks them: the key matches, the CA signed the certificate, it is valid now and it
    /// names exactly one role. The error names the file at fault, never the key.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let (c, k, a) = (read_pem(cert, "--tls-cert")?, read_pem(key, "--tls-key")?, read_pem(ca, "--tls-ca")?);
        Self::from_pem(&c, &k, &a)
    }

    /// [`Transport::load`] from PEM bytes.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| "--tls-cert: not a PEM certificate".to_owned())?;
        let leaf = chain.first().ok_or("--tls-cert: no certificate in the file")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| "--tls-key: not a PEM private key".to_owned())?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider)
            .map_err(|_| "--tls-key: does not match the certificate, or is of an unsupported type".to_owned())?;
        certified.keys_match().map_err(|_| "--tls-key: does not match the certificate".to_owned())?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(ca.map_err(|_| "--tls-ca: not a PEM certificate".to_owned())?).map_err(|e| format!("--tls-ca: {e}"))?;
        }
        if roots.is_empty() {
            return Err("--tls-ca: no certificate in the file".into());
        }
        let parsed = ParsedCertificate::try_from(leaf).map_err(|e| format!("--tls-cert: {e}"))?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &chain[1..],
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| format!("--tls-cert: not valid under --tls-ca: {e}"))?;
        let role = match roles_of(&parsed)[..] {
            [role] => role,
            _ => return Err(format!("--tls-cert: must name exactly one role (a DNS name <role>.{DOMAIN}; see `souq certs`)")),
        };
        Ok(Transport::Tls(Arc::new(Tls {
            role,
            identity: Identity::from_pem(cert_pem, key_pem),
            ca: Certificate::from_pem(ca_pem),
        })))
    }

    /// The role the certificate names; `None` in plain text.
    pub fn role(&self) -> Option<Role> {
        match self {
            Transport::Tls(t) => Some(t.role),
            Transport::Insecure => None,
        }
    }

    /// Makes `server` accept only TLS clients with a certificate of the CA.
    pub fn server(&self, server: Server) -> Result<Server, String> {
        match self {
            Transport::Insecure => Ok(server),
            Transport::Tls(t) => server
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(t.identity.clone())
                        .client_ca_root(t.ca.clone())
                        .timeout(HANDSHAKE_TIMEOUT),
                )
                .map_err(|e| format!("gRPC TLS: {e}")),
        }
    }

    /// An endpoint for `url`, whose server must hold a certificate of role `server`.
    /// With TLS every connection is TLS: an `http://` URL names the address only.
    pub fn endpoint(&self, url: &str, server: Role) -> Result<Endpoint, String> {
        match self {
            Transport::Insecure => Endpoint::from_shared(url.to_owned()).map_err(|e| format!("{url:?}: {e}")),
            Transport::Tls(t) => {
                let url = match url.strip_prefix("http://") {
                    Some(rest) => format!("https://{rest}"),
                    None => url.to_owned(),
                };
                let tls = ClientTlsConfig::new()
                    .ca_certificate(t.ca.clone())
                    .identity(t.identity.clone())
                    .domain_name(server.dns_name());
                Endpoint::from_shared(url.clone())
                    .and_then(|e| e.tls_config(tls))
                    .map_err(|e| format!("{url:?}: {e}"))
            }
        }
    }

    /// Admits a call whose peer certificate names one of `allowed`; in plain text every
    /// call (the join token is then the only check).
    pub fn admit<T>(&self, req: &Request<T>, allowed: &[Role]) -> Result<(), Status> {
        if matches!(self, Transport::Insecure) {
            return Ok(());
        }
        match peer_roles(req)[..] {
            [role] if allowed.contains(&role) => Ok(()),
            [role] => Err(WireError::new(Kind::Forbidden, format!("this service does not serve {role} certificates")).into()),
            [] if req.peer_certs().is_none() => Err(WireError::new(Kind::Unauthenticated, "no client certificate").into()),
            _ => Err(WireError::new(Kind::Forbidden, "the client certificate must name exactly one role").into()),
        }
    }

    /// An interceptor admitting only peers of the `allowed` roles (see [`Transport::admit`]).
    pub fn only(&self, allowed: &'static [Role]) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let transport = self.clone();
        move |req| transport.admit(&req, allowed).map(|()| req)
    }
}

/// The roles the peer's certificate names (none in plain text).
pub fn peer_roles<T>(req: &Request<T>) -> Vec<Role> {
    let Some(certs) = req.peer_certs() else { return Vec::new() };
    let Some(leaf) = certs.first() else { return Vec::new() };
    ParsedCertificate::try_from(leaf).map(|c| roles_of(&c)).unwrap_or_default()
}

/// The peer certificate's public key (its DER SubjectPublicKeyInfo): a peer's identity,
/// kept when its certificate is renewed with the same key. `None` in plain text.
pub fn peer_public_key<T>(req: &Request<T>) -> Option<Vec<u8>> {
    let certs = req.peer_certs()?;
    let parsed = ParsedCertificate::try_from(certs.first()?).ok()?;
    Some(parsed.subject_public_key_info().as_ref().to_vec())
}
