//! The client address behind a proxy, end to end through the login throttle's per-client
//! cap (50 password checks per client per window): behind a trusted proxy each client
//! forwarded for is counted on its own (an IPv6 client by its /64), spoofed hops left
//! of the real client change nothing, and from a peer that is not trusted
//! `X-Forwarded-For` is ignored. Before `--trusted-proxies`, every client behind a
//! proxy shared the proxy's address, so 50 bad logins from anyone locked out everyone.
use serde_json::json;
use souq_tests::TestCluster;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Password checks one client may have per window across all accounts.
const CLIENT_LIMIT: usize = 50;

/// One wrong-password login at an account of its own, as the proxy forwards it for `xff`.
async fn login(http: &reqwest::Client, edge: &str, xff: &str, n: usize) -> u16 {
    let body = json!({"email": format!("nobody-{n}@example.com"), "password": "a wrong password, surely"});
    let resp = http
        .post(format!("{edge}/api/v1/auth/login"))
        .header("x-forwarded-for", xff)
        .json(&body)
        .send()
        .await
        .expect("the edge answers");
    let status = resp.status().as_u16();
    if status >= 500 {
        panic!("{status}: {}", resp.text().await.unwrap_or_default());
    }
    status
}

/// `CLIENT_LIMIT` wrong logins for `xff`, each answered 401.
async fn use_up(http: &reqwest::Client, edge: &str, xff: &str, from: usize) {
    for n in from..from + CLIENT_LIMIT {
        assert_eq!(login(http, edge, xff, n).await, 401, "login {n} for {xff}");
    }
}

/// A second edge on the cluster's control plane that trusts proxies on 127.0.0.1, as
/// one behind a load balancer on this host would be configured. Stops when dropped.
struct ProxiedEdge {
    url: String,
    stop: CancellationToken,
}

impl Drop for ProxiedEdge {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn proxied_edge(cluster: &TestCluster) -> ProxiedEdge {
    let mut cfg = souq_edge_proxy::Config::new(cluster.control_plane_url.clone(), cluster.join_token().to_owned());
    cfg.grpc_tls = cluster.issue(souq_proto::tls::Role::Edge, "proxied-edge");
    cfg.edge_id = Some(format!("proxied-{}", uuid::Uuid::new_v4().simple()));
    cfg.trusted_proxies = vec!["127.0.0.1".into()];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { souq_edge_proxy::run(cfg, listener, s).await.expect("the proxied edge runs") });
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return ProxiedEdge { url, stop };
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the proxied edge never answered /healthz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_a_trusted_proxy_one_client_cannot_lock_out_the_others() {
    let cluster = TestCluster::builder().agents(0).start().await;
    let edge = proxied_edge(&cluster).await;
    let http = reqwest::Client::new();

    // One attacker uses up its own count, and only its own.
    use_up(&http, &edge.url, "203.0.113.7", 0).await;
    assert_eq!(login(&http, &edge.url, "203.0.113.7", 1000).await, 429, "the attacker is cut off");
    assert_eq!(login(&http, &edge.url, "198.51.100.9", 1001).await, 401, "another client still gets a verdict");
    // Hops the attacker writes left of its own address change nothing.
    assert_eq!(login(&http, &edge.url, "198.51.100.9, 203.0.113.7", 1002).await, 429, "spoofed left-most hops");
    // A proxy chain: trusted hops on the right are skipped to the client.
    assert_eq!(login(&http, &edge.url, "203.0.113.7, 127.0.0.1", 1003).await, 429, "trusted hops skipped");

    // IPv6 clients count by their /64: another address in it is the same client.
    use_up(&http, &edge.url, "2001:db8:1:2::a", 2000).await;
    assert_eq!(login(&http, &edge.url, "2001:db8:1:2:ffff::b", 3000).await, 429, "the same /64");
    assert_eq!(login(&http, &edge.url, "2001:db8:1:3::a", 3001).await, 401, "the next /64");

    // Malformed forwarding from the trusted proxy: the proxy itself is the client, no 500.
    assert_eq!(login(&http, &edge.url, "not an address", 3002).await, 401);

    // The cluster's own edge trusts no proxy: whatever X-Forwarded-For says, every
    // request from 127.0.0.1 is one client.
    for n in 0..CLIENT_LIMIT {
        let status = login(&http, &cluster.url, &format!("192.0.2.{n}"), 4000 + n).await;
        assert!(status == 401 || status == 429, "login {n}: {status}");
    }
    assert_eq!(login(&http, &cluster.url, "192.0.2.200", 5000).await, 429, "X-Forwarded-For ignored");
}
