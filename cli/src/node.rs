//! `souq node list | cordon NAME | drain NAME | uncordon NAME`: operators' view of the
//! nodes over the edge's admin REST endpoints, with the admin token as the bearer.
use std::{path::Path, time::Duration};

use anyhow::{Context, anyhow};
use serde_json::Value;

use crate::config::{ConfigError, NodeAction, NodeArgs};

/// Longest an admin call may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest admin token file read (a token is 32 to 1024 characters).
const MAX_TOKEN_FILE: u64 = 4096;

/// The admin token: `--admin-token` (or `SOUQ_ADMIN_TOKEN`), else `<data-dir>/admin-token`.
fn admin_token(args: &NodeArgs) -> Result<String, ConfigError> {
    if let Some(t) = args.admin_token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(t.to_owned());
    }
    let path = args.data_dir.join("admin-token");
    read_token_file(&path)?.ok_or_else(|| {
        ConfigError(format!(
            "missing --admin-token (or SOUQ_ADMIN_TOKEN), and no {} to read it from (souq up writes it)",
            path.display()
        ))
    })
}

/// The token in `path`, trimmed; `None` when there is no such file.
pub fn read_token_file(path: &Path) -> Result<Option<String>, ConfigError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
    };
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE)
        .read_to_string(&mut text)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    Ok((!token.is_empty()).then(|| token.to_owned()))
}

/// Runs one `souq node` command; errors name the URL and what to do.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let token = admin_token(&args)?;
    let base = args.url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ConfigError("invalid value for --url: must be an http:// or https:// URL".into()).into());
    }
    let (method, path) = match &args.action {
        NodeAction::List => (reqwest::Method::GET, "/api/v1/admin/nodes".to_owned()),
        NodeAction::Cordon { name } => (reqwest::Method::POST, format!("/api/v1/admin/nodes/{}/cordon", segment(name))),
        NodeAction::Drain { name } => (reqwest::Method::POST, format!("/api/v1/admin/nodes/{}/drain", segment(name))),
        NodeAction::Uncordon { name } => {
            (reqwest::Method::POST, format!("/api/v1/admin/nodes/{}/uncordon", segment(name)))
        }
    };
    let url = format!("{base}{path}");
    let http = reqwest::Client::builder().timeout(TIMEOUT).build().context("http client")?;
    let resp = http.request(method, &url).bearer_auth(&token).send().await.map_err(|e| unreachable(&url, &e))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(refused(&url, status.as_u16(), &body));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let rows = match &args.action {
        NodeAction::List => body["nodes"].as_array().cloned().unwrap_or_default(),
        _ => vec![body],
    };
    print!("{}", table(&rows));
    Ok(())
}

/// A node name as one path segment: names are `[A-Za-z0-9._-]`; anything else is
/// percent-encoded so it cannot change the path.
fn segment(name: &str) -> String {
    // `.` and `..` would be resolved away as path steps: encode them whole.
    let dots_only = name.bytes().all(|b| b == b'.');
    name.bytes()
        .map(|b| {
            let plain = b.is_ascii_alphanumeric() || b"-_".contains(&b) || (b == b'.' && !dots_only);
            if plain { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

fn unreachable(url: &str, e: &reqwest::Error) -> anyhow::Error {
    if url.starts_with("https://") {
        // The binary's HTTP client is built without TLS support.
        anyhow!("cannot call {url}: this souq speaks plain HTTP only; use the edge's http:// address")
    } else if e.is_connect() {
        anyhow!("cannot connect to {url}: is the edge running there? (--url, SOUQ_URL)")
    } else if e.is_timeout() {
        anyhow!("{url} did not answer within {} s", TIMEOUT.as_secs())
    } else {
        anyhow!("request to {url} failed: {e}")
    }
}

fn refused(url: &str, status: u16, body: &Value) -> anyhow::Error {
    let detail = body["detail"].as_str().unwrap_or("no detail");
    match status {
        401 => anyhow!("{url}: 401, the admin token was refused ({detail}); pass the control plane's --admin-token"),
        403 => anyhow!("{url}: 403, {detail} (start the control plane with --admin-token or SOUQ_ADMIN_TOKEN)"),
        404 => anyhow!("{url}: 404, {detail} (souq node list shows the names)"),
        _ => anyhow!("{url}: {status}, {detail}"),
    }
}

/// One cell: at most 64 characters, control characters dropped.
fn cell(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The nodes as an aligned table: NAME REGION STATE SCHEDULING INSTANCES LAST-HEARTBEAT.
pub fn table(nodes: &[Value]) -> String {
    let head = ["NAME", "REGION", "STATE", "SCHEDULING", "INSTANCES", "LAST-HEARTBEAT"].map(str::to_owned);
    let mut rows = vec![head.to_vec()];
    for n in nodes {
        let scheduling = if n["draining"] == Value::Bool(true) {
            "draining"
        } else if n["schedulable"] == Value::Bool(false) {
            "cordoned"
        } else {
            "enabled"
        };
        rows.push(vec![
            cell(&n["name"]),
            cell(&n["region"]),
            cell(&n["state"]),
            scheduling.to_owned(),
            cell(&n["instances"]),
            cell(&n["last_heartbeat"]),
        ]);
    }
    let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_table_shows_state_and_scheduling() {
        let nodes = [
            json!({"name": "a", "region": "r1", "state": "up", "schedulable": true, "draining": false, "instances": 2,
                   "last_heartbeat": "2026-12-01T10:00:00Z"}),
            json!({"name": "bb", "region": "r1", "state": "down", "schedulable": false, "draining": false, "instances": 0,
                   "last_heartbeat": "2026-12-01T09:00:00Z"}),
            json!({"name": "c", "region": "r2", "state": "up", "schedulable": false, "draining": true, "instances": 1,
                   "last_heartbeat": "2026-12-01T10:00:01Z"}),
        ];
        let t = table(&nodes);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME  REGION  STATE  SCHEDULING  INSTANCES  LAST-HEARTBEAT");
        assert_eq!(lines[1], "a     r1      up     enabled     2          2026-12-01T10:00:00Z");
        assert!(lines[2].contains("down   cordoned"), "{t}");
        assert!(lines[3].contains("draining"), "{t}");
    }

    #[test]
    fn names_stay_one_segment_and_the_token_file_is_read() {
        assert_eq!(segment("node-1.a_b"), "node-1.a_b");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
        assert_eq!(segment(".."), "%2E%2E");
        let dir = std::env::temp_dir().join(format!("souq-node-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin-token");
        assert_eq!(read_token_file(&path).unwrap(), None);
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap().as_deref(), Some("abc"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
