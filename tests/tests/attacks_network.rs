//! Attack suite, network: from a sandbox, TCP and UDP to its loopback, to this machine's
//! addresses (listeners the test starts on the docker0 bridge and host address, and the
//! agent's, control plane's and edge's ports) and DNS lookups all fail, no listener sees
//! a packet, and the only interface is `lo`. Every target is on this machine.
#![allow(clippy::unwrap_used)]
use std::{
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, docker0_ipv4, host_ipv4, port_of, run_json},
};
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};

// The cloud-metadata refusal is tested by policy with the egress proxy, never by sending to it.

/// Lists interfaces and nameservers, then tries every `[host, port]` of stdin's `tcp`
/// and `udp`; only when `lo` is the sole interface (so no packet can leave) it also asks
/// the system resolver (getaddrinfo) for every name of `dns`. Prints a map of target to
/// "ok" or the error.
const PY_PROBE: &str = r#"
import errno, json, socket, sys
cfg = json.loads(sys.stdin.read())
res = {}
def err(e):
    return type(e).__name__ + ":" + errno.errorcode.get(e.errno or 0, str(e.errno))
res["interfaces"] = sorted(n for _, n in socket.if_nameindex())
try:
    res["nameservers"] = [l.split()[1] for l in open("/etc/resolv.conf") if l.split()[:1] == ["nameserver"]]
except OSError as e:
    res["nameservers"] = [err(e)]
for host, port in cfg["tcp"]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        res["tcp %s:%d" % (host, port)] = "ok"
    except OSError as e:
        res["tcp %s:%d" % (host, port)] = err(e)
# A DNS query for example.com, sent as is to each UDP target.
query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
for host, port in cfg["udp"]:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        s.sendto(query, (host, port))
        s.recv(512)
        res["udp %s:%d" % (host, port)] = "ok"
    except OSError as e:
        res["udp %s:%d" % (host, port)] = err(e)
for name in cfg["dns"]:
    if res["interfaces"] != ["lo"]:
        res["dns " + name] = "skipped: not only lo"
        continue
    try:
        res["dns " + name] = "ok " + str(socket.getaddrinfo(name, 80)[0][4])
    except OSError as e:
        res["dns " + name] = type(e).__name__ + ":" + str(e)
print(json.dumps(res))
"#;

/// TCP to every `[host, port]` of `tcp`; a c-ares resolver pointed at `dns_server` looks
/// up every name of `dns`; getaddrinfo too, only when `lo` is the sole interface.
const NODE_PROBE: &str = r#"
const net = require('net'), dns = require('dns'), os = require('os');
const cfg = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const res = { interfaces: Object.keys(os.networkInterfaces()).sort() };
const onlyLo = res.interfaces.join() === 'lo';
const tcp = ([host, port]) => new Promise(done => {
  const s = net.connect({ host, port, timeout: 2000 });
  s.on('connect', () => { res[`tcp ${host}:${port}`] = 'ok'; s.destroy(); done(); });
  s.on('error', e => { res[`tcp ${host}:${port}`] = e.code; done(); });
  s.on('timeout', () => { res[`tcp ${host}:${port}`] = 'timeout'; s.destroy(); done(); });
});
const resolver = new dns.Resolver({ timeout: 1000, tries: 1 });
resolver.setServers([`${cfg.dns_server[0]}:${cfg.dns_server[1]}`]);
const look = name => new Promise(done => onlyLo
  ? dns.lookup(name, (e, a) => { res[`dns ${name}`] = e ? e.code : `ok ${a}`; done(); })
  : (res[`dns ${name}`] = 'skipped: not only lo', done()));
const resolve = name => new Promise(done => resolver.resolve4(name, (e, a) => { res[`dns resolve4 ${name}`] = e ? e.code : `ok ${a}`; done(); }));
Promise.all([...cfg.tcp.map(tcp), ...cfg.dns.map(look), ...cfg.dns.map(resolve)]).then(() => console.log(JSON.stringify(res)));
"#;

/// TCP to every `[host, port]` of `tcp`; Go's own resolver, made to dial `dns_server`
/// whatever resolv.conf says, looks up every name of `dns`.
const GO_PROBE: &str = r#"package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sort"
	"time"
)

func main() {
	var cfg struct {
		TCP       [][2]any `json:"tcp"`
		DNS       []string `json:"dns"`
		DNSServer [2]any   `json:"dns_server"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		panic(err)
	}
	res := map[string]any{}
	ifs, _ := net.Interfaces()
	names := []string{}
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	sort.Strings(names)
	res["interfaces"] = names
	for _, t := range cfg.TCP {
		addr := net.JoinHostPort(fmt.Sprint(t[0]), fmt.Sprint(t[1]))
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			res["tcp "+addr] = "ok"
		} else {
			res["tcp "+addr] = err.Error()
		}
	}
	server := net.JoinHostPort(fmt.Sprint(cfg.DNSServer[0]), fmt.Sprint(cfg.DNSServer[1]))
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		d := net.Dialer{Timeout: time.Second}
		return d.DialContext(ctx, network, server)
	}}
	for _, n := range cfg.DNS {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if a, err := r.LookupHost(ctx, n); err == nil {
			res["dns "+n] = fmt.Sprint("ok ", a)
		} else {
			res["dns "+n] = err.Error()
		}
		cancel()
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
"#;

/// Asserts that nothing in the probe's map says "ok".
fn assert_all_failed(runtime: &str, res: &Value) {
    let ok: Vec<_> = res.as_object().unwrap().iter().filter(|(_, v)| v.as_str().is_some_and(|s| s.starts_with("ok"))).collect();
    assert!(ok.is_empty(), "{runtime}: reached from the sandbox: {ok:?}");
}

/// A listener the test owns on one of this machine's addresses; counts what arrives.
struct Counted {
    name: String,
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Counted {
    async fn tcp(ip: &str, port: u16) -> std::io::Result<Counted> {
        let l = TcpListener::bind((ip, port)).await?;
        let (addr, seen) = (l.local_addr()?, Arc::new(AtomicUsize::new(0)));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = l.accept().await {
                s.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Ok(Counted { name: format!("tcp {addr}"), addr, seen, task })
    }

    async fn udp(ip: &str, port: u16) -> std::io::Result<Counted> {
        let sock = UdpSocket::bind((ip, port)).await?;
        let (addr, seen) = (sock.local_addr()?, Arc::new(AtomicUsize::new(0)));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while sock.recv_from(&mut buf).await.is_ok() {
                s.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(Counted { name: format!("udp {addr}"), addr, seen, task })
    }

    fn count(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// Waits up to 5 s for every listener's count to reach `want`; returns the counts.
async fn counts_reach(listeners: &[Counted], want: usize) -> Vec<usize> {
    let start = Instant::now();
    loop {
        let counts: Vec<usize> = listeners.iter().map(Counted::count).collect();
        if counts.iter().all(|&n| n >= want) || start.elapsed() > Duration::from_secs(5) {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_reaches_out_of_the_sandbox() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let (host, bridge) = (host_ipv4(), docker0_ipv4());
    let (agent, cp, edge) = (port_of(&c.agent_urls[0]), port_of(&c.control_plane_url), port_of(&c.url));
    // The targets are live: from the host, the agent, control plane and edge answer.
    for port in [agent, cp, edge] {
        TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    // Listeners of our own on the docker0 bridge address and the host's address.
    let mut listeners = vec![
        Counted::tcp(&bridge, 0).await.unwrap(),
        Counted::udp(&bridge, 0).await.unwrap(),
        Counted::tcp(&host, 0).await.unwrap(),
        Counted::udp(&host, 0).await.unwrap(),
    ];
    // A resolver's port on the bridge, 53 when free (the test runs as root), else any.
    let dns_udp = match Counted::udp(&bridge, 53).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{bridge}:53/udp not free ({e}); the fake resolver takes another port");
            Counted::udp(&bridge, 0).await.unwrap()
        }
    };
    let dns_port = dns_udp.addr.port();
    let dns_tcp = Counted::tcp(&bridge, dns_port).await;
    if let Err(e) = &dns_tcp {
        eprintln!("{bridge}:{dns_port}/tcp not free ({e}); DNS over TCP goes unwatched");
    }
    listeners.push(dns_udp);
    listeners.extend(dns_tcp.ok());
    let (tcp_l, udp_l): (Vec<&Counted>, Vec<&Counted>) = listeners.iter().partition(|l| l.name.starts_with("tcp"));
    let tcp_targets: Vec<SocketAddr> = tcp_l.iter().map(|l| l.addr).collect();
    let udp_targets: Vec<SocketAddr> = udp_l.iter().map(|l| l.addr).collect();

    // Controls, so that "zero" means something: the host reaches every listener, and so
    // does a container on Docker's default bridge network.
    for a in &tcp_targets {
        TcpStream::connect(a).unwrap();
    }
    let out = std::net::UdpSocket::bind((bridge.as_str(), 0)).unwrap();
    for a in &udp_targets {
        out.send_to(b"control", a).unwrap();
    }
    let counts = counts_reach(&listeners, 1).await;
    assert!(counts.iter().all(|&n| n == 1), "host control: {counts:?}");
    let image = souq_tests::images().await.into_values().find(|i| i.contains("python")).unwrap();
    let control = format!(
        "import socket\nfor a in {tcp:?}: socket.create_connection(a, timeout=3).close()\n\
         for a in {udp:?}: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'control', a)\n",
        tcp = tcp_targets.iter().map(|a| (a.ip().to_string(), a.port())).collect::<Vec<_>>(),
        udp = udp_targets.iter().map(|a| (a.ip().to_string(), a.port())).collect::<Vec<_>>(),
    )
    .replace('"', "'");
    let run = Command::new("docker")
        .args(["run", "--rm", "--network", "bridge", "--entrypoint", "python3", &image, "-c", &control])
        .output()
        .unwrap();
    assert!(run.status.success(), "control container: {}", String::from_utf8_lossy(&run.stderr));
    let counts = counts_reach(&listeners, 2).await;
    assert!(counts.iter().all(|&n| n == 2), "container control: {counts:?}");
    let before: Vec<usize> = listeners.iter().map(Counted::count).collect();

    let ports = [22, 53, 80, 443, 2375, 2376, 5432, 6379, 1025, 8080, agent, cp, edge];
    let mut tcp: Vec<Value> = Vec::new();
    for addr in ["127.0.0.1", "::1", host.as_str(), bridge.as_str()] {
        tcp.extend(ports.iter().map(|p| json!([addr, p])));
    }
    for a in &tcp_targets {
        let v = json!([a.ip().to_string(), a.port()]);
        if !tcp.contains(&v) {
            tcp.push(v);
        }
    }
    let udp: Vec<Value> = udp_targets.iter().map(|a| json!([a.ip().to_string(), a.port()])).collect();
    let dns = ["example.com", "localhost.localdomain", "host.docker.internal"];
    let cfg = json!({"tcp": tcp, "udp": udp, "dns": dns}).to_string();

    let res = run_json(&c, &t, "python", PY_PROBE, &cfg).await;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for v in res.as_object().unwrap().values().filter_map(Value::as_str) {
        *outcomes.entry(v.to_owned()).or_default() += 1;
    }
    eprintln!(
        "python, {} probes, outcomes {outcomes:?}, interfaces {}, nameservers {}",
        res.as_object().unwrap().len() - 2,
        res["interfaces"],
        res["nameservers"]
    );
    assert_eq!(res["interfaces"], json!(["lo"]), "{res}");
    assert_eq!(res.as_object().unwrap().len(), 2 + tcp.len() + udp.len() + dns.len(), "{res}");
    // No nameserver the sandbox could reach: with `lo` alone, only a loopback one could
    // be, and that would be the sandbox's own, which nothing serves.
    let reachable: Vec<_> = res["nameservers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.as_str().is_none_or(|n| n.parse::<std::net::IpAddr>().map_or(true, |ip| ip.is_loopback())))
        .collect();
    assert!(reachable.is_empty(), "python: nameservers {reachable:?}: {res}");
    for l in &listeners {
        let key = format!("{} {}:{}", &l.name[..3], l.addr.ip(), l.addr.port());
        let v = res[&key].as_str().unwrap_or_default();
        assert!(v.contains("ENETUNREACH"), "python {key}: {v} (want ENETUNREACH)");
    }
    assert_all_failed("python", &res);

    // The same from node and go, on the addresses that matter most, with their resolvers
    // pointed at the bridge's fake resolver.
    let mut few: Vec<Value> = vec![json!(["127.0.0.1", agent]), json!([host, agent]), json!([host, cp]), json!([bridge, edge])];
    few.extend(tcp_targets.iter().map(|a| json!([a.ip().to_string(), a.port()])));
    let cfg = json!({"tcp": few, "dns": dns, "dns_server": [bridge, dns_port]}).to_string();
    for (runtime, code, per_name, unreach) in
        [("node", NODE_PROBE, 2, "ENETUNREACH"), ("go", GO_PROBE, 1, "network is unreachable")]
    {
        let res = run_json(&c, &t, runtime, code, &cfg).await;
        eprintln!("{runtime}: {res}");
        assert_eq!(res["interfaces"], json!(["lo"]), "{runtime}: {res}");
        assert_eq!(res.as_object().unwrap().len(), 1 + few.len() + per_name * dns.len(), "{runtime}: {res}");
        for a in &tcp_targets {
            let v = res[&format!("tcp {a}")].as_str().unwrap_or_default();
            assert!(v.contains(unreach), "{runtime} tcp {a}: {v} (want {unreach})");
        }
        assert_all_failed(runtime, &res);
    }

    // Nothing the sandboxes sent arrived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<usize> = listeners.iter().map(Counted::count).collect();
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    eprintln!("listeners {names:?}: {before:?} after the controls, {after:?} after the sandboxes");
    assert_eq!(after, before, "a listener on this machine heard from a sandbox: {names:?}");
    for l in listeners {
        l.task.abort();
    }
    assert_healthy(&c, &t).await;
    c.stop().await;
}
