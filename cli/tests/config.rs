//! Bad configuration exits with status 64 and names the option, before binding a port.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn souq(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_souq")).args(args).env_remove("SOUQ_DATABASE_URL").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_values_exit_64_naming_the_option() {
    let (code, err) = souq(&["up", "--edge-addr", "not-an-address"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--edge-addr"), "{err}");

    let (code, err) = souq(&["up", "--sandbox-memory-mb", "1"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--sandbox-memory-mb"), "{err}");

    let (code, err) = souq(&["up", "--database-url", "mysql://user:hunter2@db/x"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--database-url"), "{err}");
    assert!(!err.contains("hunter2"), "a secret was echoed: {err}");

    let long = format!("/tmp/{}", "d".repeat(90));
    let (code, err) = souq(&["up", "--data-dir", &long, "--edge-addr", "127.0.0.1:0"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--data-dir") && err.contains("at most"), "{err}");

    let (code, err) = souq(&["control-plane", "--join-token", "short"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--join-token"), "{err}");

    for (args, option) in [
        (&["up", "--max-replicas", "0"][..], "--max-replicas"),
        (&["up", "--cpu-overcommit", "0"][..], "--cpu-overcommit"),
        (&["edge", "--join-token", "short"][..], "--join-token"),
        (&["up", "--metering", "sometimes"][..], "--metering"),
        (&["up", "--redis-url", "http://127.0.0.1:6379"][..], "--redis-url"),
        (&["up", "--header-read-timeout-s", "0"][..], "--header-read-timeout-s"),
        (&["up", "--max-connections", "0"][..], "--max-connections"),
        (&["up", "--quota-versions-per-api", "1"][..], "--quota-versions-per-api"),
        (&["up", "--quota-executes-per-minute", "0"][..], "--quota-executes-per-minute"),
    ] {
        let (code, err) = souq(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(err.contains(option), "{args:?}: {err}");
    }
    // The edge needs the join token now: it follows the routes and calls agents.
    let (code, err) = souq(&["edge"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--join-token"), "{err}");
}

/// Every option is checked before any port is bound: with the port already taken, a bad
/// option still exits 64 naming the option, never 1 for the busy port.
#[test]
fn options_are_checked_before_the_port_is_bound() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let token = "0123456789abcdef0123";
    for (args, option) in [
        (vec!["edge", "--edge-addr", &addr, "--join-token", token, "--edge-id", "no spaces allowed"], "--edge-id"),
        (vec!["edge", "--edge-addr", &addr, "--join-token", token, "--control-plane-url", "ftp://x"], "--control-plane-url"),
        (vec!["edge", "--edge-addr", &addr, "--join-token", token, "--redis-url", "redis://h:notaport"], "--redis-url"),
        (vec!["edge", "--edge-addr", &addr, "--join-token", token, "--trusted-proxies", "10.0.0.0/8,10.0.0.0/33"], "--trusted-proxies"),
        (vec!["edge", "--edge-addr", &addr, "--join-token", token, "--write-timeout-s", "0"], "--write-timeout-s"),
        (vec!["edge", "--edge-addr", &addr, "--join-token", token, "--edge-tls-cert", "/nonexistent/cert.pem", "--edge-tls-key", "/nonexistent/key.pem"], "--edge-tls-cert"),
        (vec!["edge", "--edge-addr", &addr, "--join-token", token, "--edge-tls-cert", "/nonexistent/cert.pem"], "--edge-tls-key"),
        (vec!["agent", "--agent-addr", &addr, "--join-token", token, "--node-name", "bad name"], "--node-name"),
        (vec!["control-plane", "--grpc-addr", &addr, "--join-token", token, "--public-url", "x"], "--public-url"),
        (vec!["control-plane", "--grpc-addr", &addr, "--join-token", token, "--quota-apis", "0"], "--quota-apis"),
        (vec!["up", "--edge-addr", &addr, "--smtp-url", "mail://x"], "--smtp-url"),
    ] {
        let (code, err) = souq(&args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(err.contains(option), "{args:?}: {err}");
        assert!(!err.contains("cannot listen"), "{args:?} reached the bind: {err}");
    }
    // And a good configuration does reach the bind, which fails on the taken port; plain
    // text only when asked for, with a warning.
    let (code, err) = souq(&["edge", "--edge-addr", &addr, "--join-token", token, "--edge-id", "edge-1", "--insecure-grpc"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen"), "{err}");
    assert!(err.contains("--insecure-grpc: the internal gRPC links are plain text"), "no warning: {err}");
    drop(taken);
}

/// The internal gRPC links need a certificate of the role from `souq certs` (or
/// `--insecure-grpc`); one that `souq certs` issued is accepted.
#[test]
fn roles_need_their_certificate_and_souq_certs_issues_one() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let token = "0123456789abcdef0123";
    let dir = std::env::temp_dir().join(format!("souq-cli-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    for role in ["edge", "agent"] {
        let out = Command::new(env!("CARGO_BIN_EXE_souq")).args(["certs", "--dir", d, "--role", role]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let key = std::fs::metadata(dir.join("ca.key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);
    let (code, err) = souq(&["certs", "--dir", d, "--role", "admin"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--role"), "{err}");

    let files = |name: &str| [format!("{d}/{name}.pem"), format!("{d}/{name}.key"), format!("{d}/ca.pem")];
    let ([cert, key, ca], [agent_cert, agent_key, _]) = (files("edge"), files("agent"));
    let (cert, key, ca, agent_cert, agent_key) = (&*cert, &*key, &*ca, &*agent_cert, &*agent_key);
    let edge = ["edge", "--edge-addr", &addr, "--join-token", token];
    for (extra, option) in [
        (vec![], "--tls-cert"),
        (vec!["--tls-cert", cert, "--tls-key", key], "--tls-ca"),
        (vec!["--tls-cert", "/nonexistent.pem", "--tls-key", key, "--tls-ca", ca], "--tls-cert"),
        (vec!["--tls-cert", cert, "--tls-key", agent_key, "--tls-ca", ca], "--tls-key"),
        (vec!["--tls-cert", agent_cert, "--tls-key", agent_key, "--tls-ca", ca], "--tls-cert"),
        (vec!["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, "--insecure-grpc"], "--insecure-grpc"),
    ] {
        let args: Vec<&str> = edge.iter().copied().chain(extra).collect();
        let (code, err) = souq(&args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(err.contains(option), "{args:?}: {err}");
    }
    let args: Vec<&str> = edge.iter().copied().chain(["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca]).collect();
    let (code, err) = souq(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen"), "{err}");
    drop(taken);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_hides_secret_values() {
    let out = Command::new(env!("CARGO_BIN_EXE_souq"))
        .args(["control-plane", "--help"])
        .env("SOUQ_JOIN_TOKEN", "super-secret-join-token-value")
        .env("SOUQ_DATABASE_URL", "postgres://u:pw-secret@h/db")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("--join-token"));
    assert!(!help.contains("super-secret") && !help.contains("pw-secret"), "{help}");
}
