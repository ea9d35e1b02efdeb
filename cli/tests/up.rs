//! `souq up` as a user runs it: the binary starts every role, says where the edge
//! listens, and serves signup → login → execute; SIGTERM stops it and leaves nothing.
//! The process carries canary secrets in its environment, which no sandbox may see.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

fn containers_of(node: &str) -> String {
    let out = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=souq.node={node}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn up_serves_the_walkthrough_and_stops_cleanly() {
    let data_dir = std::env::temp_dir().join(format!("souq-up-test-{}", std::process::id()));
    let node = format!("up-test-{}", std::process::id());
    let canary = format!("canary-{}-secret", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_souq"))
        .args(["up", "--edge-addr", "127.0.0.1:0", "--node-name", &node])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("SOUQ_DATABASE_URL")
        .env("SOUQ_CANARY_SECRET", &canary)
        .env("AWS_SECRET_ACCESS_KEY", &canary)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("edge listening on "))
    });
    let line = tokio::time::timeout(Duration::from_secs(600), line).await.unwrap().unwrap().expect("no ready line");
    let url = line.trim_start_matches("edge listening on ").to_owned();

    let http = reqwest::Client::new();
    let post = |path: &str, body: Value, token: Option<String>| {
        let mut req = http.post(format!("{url}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let creds = json!({"email": "walk@example.com", "password": "walkthrough pw"});
    assert_eq!(post("/api/v1/auth/signup", creds.clone(), None).await.unwrap().status(), 202);
    let login: Value = post("/api/v1/auth/login", creds, None).await.unwrap().json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let me: Value = http.get(format!("{url}/api/v1/auth/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user"]["email"], "walk@example.com");
    let run: Value = post("/api/v1/execute", json!({"runtime": "python", "code": "print('hi')"}), Some(token.clone()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["stdout"], "hi\n", "{run}");
    let dump = "import os\nprint(dict(os.environ))\nfor p in ('/proc/1/environ', '/proc/self/environ'):\n    print(open(p, 'rb').read())";
    let env: Value = post("/api/v1/execute", json!({"runtime": "python", "code": dump}), Some(token.clone()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(env["exit_code"], 0, "{env}");
    assert!(!env["stdout"].as_str().unwrap().contains("canary-"), "a secret of the agent's environment leaked: {env}");
    assert!(data_dir.join("souq.db").exists(), "state is not in the data dir");

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(containers_of(&node), "");
    let _ = std::fs::remove_dir_all(&data_dir);
}
