//! HTTPS on the edge (`--edge-tls-cert`, `--edge-tls-key`): the rustls server config,
//! ALPN for HTTP/2 and HTTP/1.1, and a plain-HTTP request to the HTTPS port answered
//! with a 400 instead of a failed handshake.
use std::{path::Path, sync::Arc};

use axum::{http::StatusCode, response::IntoResponse};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::ApiError;

/// The certificate chain and private key files, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// TLS's first byte: a handshake record.
const HANDSHAKE: u8 = 0x16;

/// Loads the files and builds the acceptor. The error names the flag and the file at
/// fault, never the key's contents.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("--edge-tls-key {}: no PEM private key ({e})", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--edge-tls-cert and --edge-tls-key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("--edge-tls-cert {}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(certs)
}

/// Whether the client opened with something other than a TLS handshake: it speaks
/// plain HTTP (or nothing sensible) to the HTTPS port. Waits for its first byte.
pub async fn speaks_plain(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0] != HANDSHAKE)
}

/// Answers one plain-HTTP request on the HTTPS port with a 400 problem+json and
/// closes the connection.
pub async fn refuse_plain<I>(io: I, header_read: std::time::Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|_req| async {
        let refusal = ApiError::new(StatusCode::BAD_REQUEST, "bad-request", "this port speaks HTTPS; use https://");
        let mut resp = refusal.into_response();
        resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        Ok::<_, std::convert::Infallible>(resp)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "plain HTTP on the HTTPS port");
    }
}
