//! Attack suite, network: from a sandbox, TCP to its loopback, to the host's addresses,
//! to the agent's, control plane's and edge's ports and to the cloud metadata address,
//! UDP out, and DNS lookups all fail; the only interface is `lo`.
#![allow(clippy::unwrap_used)]
use std::net::TcpStream;

use serde_json::{Value, json};
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, docker0_ipv4, host_ipv4, port_of, run_json},
};

/// Tries every `[host, port]` of stdin's `tcp` and every name of `dns`; prints a map of
/// target to "ok" or the error.
const PY_PROBE: &str = r#"
import errno, json, socket, sys
cfg = json.loads(sys.stdin.read())
res = {}
def err(e):
    return type(e).__name__ + ":" + errno.errorcode.get(e.errno or 0, str(e.errno))
for host, port in cfg["tcp"]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        res["tcp %s:%d" % (host, port)] = "ok"
    except OSError as e:
        res["tcp %s:%d" % (host, port)] = err(e)
for name in cfg["dns"]:
    try:
        res["dns " + name] = "ok " + str(socket.getaddrinfo(name, 80)[0][4])
    except OSError as e:
        res["dns " + name] = type(e).__name__ + ":" + str(e)
for host in ["8.8.8.8", "1.1.1.1", cfg["host"]]:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01", (host, 53))
        s.settimeout(1)
        s.recv(512)
        res["udp %s:53" % host] = "ok"
    except OSError as e:
        res["udp %s:53" % host] = err(e)
res["interfaces"] = sorted(n for _, n in socket.if_nameindex())
print(json.dumps(res))
"#;

const NODE_PROBE: &str = r#"
const net = require('net'), dns = require('dns');
const cfg = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const res = {};
const tcp = ([host, port]) => new Promise(done => {
  const s = net.connect({ host, port, timeout: 2000 });
  s.on('connect', () => { res[`tcp ${host}:${port}`] = 'ok'; s.destroy(); done(); });
  s.on('error', e => { res[`tcp ${host}:${port}`] = e.code; done(); });
  s.on('timeout', () => { res[`tcp ${host}:${port}`] = 'timeout'; s.destroy(); done(); });
});
const look = name => new Promise(done => dns.lookup(name, (e, a) => { res[`dns ${name}`] = e ? e.code : `ok ${a}`; done(); }));
const resolve = name => new Promise(done => dns.resolve4(name, (e, a) => { res[`dns resolve4 ${name}`] = e ? e.code : `ok ${a}`; done(); }));
Promise.all([...cfg.tcp.map(tcp), ...cfg.dns.map(look), ...cfg.dns.map(resolve)]).then(() => console.log(JSON.stringify(res)));
"#;

const GO_PROBE: &str = r#"package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	var cfg struct {
		TCP [][2]any `json:"tcp"`
		DNS []string `json:"dns"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		panic(err)
	}
	res := map[string]string{}
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
	for _, n := range cfg.DNS {
		if a, err := net.LookupHost(n); err == nil {
			res["dns "+n] = fmt.Sprint("ok ", a)
		} else {
			res["dns "+n] = err.Error()
		}
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

#[tokio::test]
async fn no_network_reaches_out_of_the_sandbox() {
    let c = TestCluster::builder().start().await;
    let t = c.user().await;
    let (host, bridge) = (host_ipv4(), docker0_ipv4());
    let (agent, cp, edge) = (port_of(&c.agent_urls[0]), port_of(&c.control_plane_url), port_of(&c.url));
    // The targets are live: from the host, the agent, control plane and edge answer.
    for port in [agent, cp, edge] {
        TcpStream::connect(("127.0.0.1", port)).unwrap();
    }
    let ports = [22, 53, 80, 443, 2375, 2376, 5432, 6379, 1025, 8080, agent, cp, edge];
    let mut tcp: Vec<Value> = Vec::new();
    for addr in ["127.0.0.1", "::1", host.as_str(), bridge.as_str(), "172.17.0.2", "10.0.0.1", "192.168.0.1"] {
        tcp.extend(ports.iter().map(|p| json!([addr, p])));
    }
    tcp.extend([json!(["169.254.169.254", 80]), json!(["169.254.170.2", 80]), json!(["1.1.1.1", 443]), json!(["8.8.8.8", 53])]);
    let dns = ["example.com", "localhost.localdomain", "metadata.google.internal", "host.docker.internal"];
    let cfg = json!({"tcp": tcp, "dns": dns, "host": host}).to_string();

    let res = run_json(&c, &t, "python", PY_PROBE, &cfg).await;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for v in res.as_object().unwrap().values().filter_map(Value::as_str) {
        *outcomes.entry(v.to_owned()).or_default() += 1;
    }
    eprintln!("python, {} probes, outcomes {outcomes:?}, interfaces {}", res.as_object().unwrap().len() - 1, res["interfaces"]);
    assert_eq!(res["interfaces"], json!(["lo"]), "{res}");
    assert_all_failed("python", &res);

    // The same from node and go, on the addresses that matter most.
    let few: Vec<Value> = [
        json!(["127.0.0.1", agent]),
        json!([host, agent]),
        json!([host, cp]),
        json!([bridge, edge]),
        json!([bridge, 5432]),
        json!(["169.254.169.254", 80]),
    ]
    .into();
    let cfg = json!({"tcp": few, "dns": dns}).to_string();
    for (runtime, code) in [("node", NODE_PROBE), ("go", GO_PROBE)] {
        let res = run_json(&c, &t, runtime, code, &cfg).await;
        eprintln!("{runtime}: {res}");
        assert!(res.as_object().unwrap().len() >= few.len() + dns.len(), "{runtime}: {res}");
        assert_all_failed(runtime, &res);
    }
    assert_healthy(&c, &t).await;
    c.stop().await;
}
