//! HTTPS on the edge, against `run` with a self-signed certificate made here: the
//! handshake offers HTTP/2 and HTTP/1.1 by ALPN and a request is answered; plain HTTP
//! to the HTTPS port gets a 400 problem+json, a silent connection is closed by the
//! header-read timeout; a missing or bad certificate stops the edge at start-up.
use std::{path::PathBuf, sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use souq_edge_proxy::{Config, run, tls::TlsFiles};
use souq_proto::{metering::AccessTable, routes::RouteTable};
use souq_test_support::{FakeMetering, FakeRoutes, Feed, Served, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

const JOIN: &str = "join-token-0123456789";
/// Generous bound on anything the edge should do at once.
const WITHIN: Duration = Duration::from_secs(20);

async fn control_plane() -> Served {
    let routes = FakeRoutes::new(Feed::tables(vec![RouteTable { generation: 1, routes: vec![] }]));
    let metering = FakeMetering::new(Feed::tables(vec![AccessTable { generation: 1, ..AccessTable::default() }]));
    serve(tonic::service::Routes::new(routes.service()).add_service(metering.service())).await
}

/// A fresh directory for this test's files.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("souq-edge-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A self-signed certificate for `localhost`, written as PEM; and its DER for the client.
fn certificate(dir: &std::path::Path) -> (TlsFiles, rustls::pki_types::CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("self-signed certificate");
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&files.cert, made.cert.pem()).expect("write cert");
    std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("write key");
    (files, made.cert.der().clone())
}

fn connector(root: rustls::pki_types::CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_and_plain_http_to_it_is_refused_cleanly() {
    let cp = control_plane().await;
    let dir = scratch();
    let (files, root) = certificate(&dir);
    let mut cfg = Config::new(cp.url(), JOIN.into());
    cfg.metering = false;
    cfg.header_read_timeout = Duration::from_secs(1);
    cfg.tls = Some(files);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let edge = tokio::spawn(run(cfg, listener, shutdown.clone()));
    let name = ServerName::try_from("localhost").expect("name");

    // ALPN: HTTP/2 is preferred when the client offers it.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let h2 = connector(root.clone(), &[b"h2", b"http/1.1"]).connect(name.clone(), tcp).await.expect("handshake");
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(h2);

    // A request over HTTP/1.1 in TLS.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector(root, &[b"http/1.1"]).connect(name, tcp).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("request");
    let mut answer = String::new();
    tokio::time::timeout(WITHIN, tls.read_to_string(&mut answer)).await.expect("answered in time").expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Plain HTTP to the HTTPS port: a 400 problem+json saying so, not a hang.
    let plain = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await.expect("plain answer");
    assert_eq!(plain.status(), 400);
    assert_eq!(plain.headers()["content-type"], "application/problem+json");
    assert!(plain.text().await.expect("body").contains("HTTPS"));

    // A connection that never starts a handshake is closed by the header-read timeout.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(WITHIN, silent.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    shutdown.cancel();
    tokio::time::timeout(WITHIN, edge).await.expect("the edge stops").expect("join").expect("run");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_missing_or_bad_certificate_stops_the_edge_at_start_up() {
    let dir = scratch();
    let (good, _) = certificate(&dir);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file").expect("write");
    let other = scratch();
    let cases = [
        (TlsFiles { cert: dir.join("missing.pem"), key: good.key.clone() }, "--edge-tls-cert"),
        (TlsFiles { cert: garbage.clone(), key: good.key.clone() }, "--edge-tls-cert"),
        (TlsFiles { cert: good.cert.clone(), key: garbage }, "--edge-tls-key"),
        // A key that is not the certificate's.
        (TlsFiles { cert: good.cert.clone(), key: certificate(&other).0.key }, "--edge-tls-cert"),
    ];
    for (files, flag) in cases {
        let mut cfg = Config::new("http://127.0.0.1:1".into(), JOIN.into());
        cfg.tls = Some(files.clone());
        let e = cfg.validate().expect_err("refused");
        assert!(e.starts_with(flag), "{files:?}: {e}");
        assert!(!e.contains("PRIVATE KEY"), "never key material: {e}");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ran = tokio::time::timeout(WITHIN, run(cfg, listener, CancellationToken::new())).await.expect("fails fast");
        assert!(ran.is_err(), "{files:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other);
}
