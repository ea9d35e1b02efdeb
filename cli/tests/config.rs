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
    assert!(err.contains("--data-dir") && err.contains("too long"), "{err}");

    let (code, err) = souq(&["control-plane", "--join-token", "short"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--join-token"), "{err}");

    for (args, option) in [
        (&["up", "--max-replicas", "0"][..], "--max-replicas"),
        (&["up", "--cpu-overcommit", "0"][..], "--cpu-overcommit"),
        (&["edge", "--join-token", "short"][..], "--join-token"),
        (&["up", "--metering", "sometimes"][..], "--metering"),
        (&["up", "--redis-url", "http://127.0.0.1:6379"][..], "--redis-url"),
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
