//! Instances on the real Docker Engine with the real runtime images (serve mode): load,
//! calls, logs, load errors, crashes, OOM kills, timeouts and removal. Needs Docker and
//! the images, so it is ignored by default: `cargo test -p souq-node-agent -- --ignored`.
// A test's helpers may panic: that fails the test, which is what they are for.
#![allow(clippy::unwrap_used)]
use std::{sync::Arc, time::Duration};

use bollard::query_parameters::ListContainersOptions;
use souq_node_agent::{
    Limits,
    docker::{Engine, images},
    instances::{DockerLauncher, InstanceSpec, Instances},
    sandbox::profile::{LABEL_KIND, LABEL_NODE},
};
use souq_proto::{
    Kind, Runtime,
    agent::{InstanceState, InstanceStatus, ResultKind},
};

struct Node {
    dir: std::path::PathBuf,
    name: String,
    all: Instances,
    images: images::Images,
    docker: bollard::Docker,
}

async fn node() -> Node {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("souq-it-{pid}"));
    images::write_sources(&dir.join("runtimes")).unwrap();
    let images = images::tags(&dir.join("runtimes")).await.unwrap();
    let engine = Arc::new(Engine::new(None));
    let docker = engine.get().unwrap();
    for image in images.values() {
        assert!(images::exists(&docker, image).await.unwrap(), "build the runtime images first: {image}");
    }
    let channels = dir.join("ch");
    std::fs::create_dir_all(&channels).unwrap();
    let name = format!("it-{pid}");
    let limits = Limits::default();
    let launcher = DockerLauncher::new(engine, name.clone(), limits.clone(), channels);
    Node { dir, name, all: Instances::new(Arc::new(launcher), limits.output_bytes, 16), images, docker }
}

impl Node {
    fn spec(&self, id: &str, runtime: Runtime, code: &str, timeout: Duration) -> InstanceSpec {
        InstanceSpec {
            instance_id: id.into(),
            api_id: "api".into(),
            version: 1,
            runtime,
            image: self.images[&runtime].clone(),
            code: code.into(),
            timeout,
        }
    }

    async fn eventually(&self, id: &str, done: impl Fn(&InstanceStatus) -> bool) -> InstanceStatus {
        for _ in 0..300 {
            if let Some(s) = self.all.statuses().into_iter().find(|s| s.instance_id == id)
                && done(&s)
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{id} never got there: {:?}", self.all.statuses());
    }

    async fn containers(&self) -> usize {
        let filters = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_NODE}={}", self.name), format!("{LABEL_KIND}=instance")],
        )]);
        let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        self.docker.list_containers(Some(opts)).await.unwrap().len()
    }
}

fn kind<T: std::fmt::Debug>(r: souq_node_agent::Result<T>) -> Kind {
    match r {
        Err(souq_node_agent::Error::Wire(w)) => w.kind,
        other => panic!("expected a wire error, got {other:?}"),
    }
}

const PYTHON: &str = r#"
import os, time
def handler(event):
    body = event.get("body") or {}
    if body.get("die"):
        print("dying now", flush=True)
        os._exit(3)
    if body.get("sleep"):
        time.sleep(body["sleep"])
    if body.get("hog"):
        x = bytearray(1024 * 1024 * 1024)
    print("called", body.get("n"))
    return {"n": body.get("n")}
"#;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Docker and the runtime images"]
async fn instances_on_docker() {
    let node = node().await;
    let t = Duration::from_secs(2);
    let status = node.all.deploy(node.spec("py-1", Runtime::Python, PYTHON, t)).await.unwrap();
    assert_eq!(status.state, InstanceState::Running as i32, "{status:?}");
    let call = |n: u32| node.all.invoke("py-1", format!(r#"{{"body":{{"n":{n}}}}}"#).into_bytes(), None);
    let r = call(7).await.unwrap();
    assert_eq!((r.kind(), r.body.as_slice()), (ResultKind::Json, &br#"{"n":7}"#[..]));

    // The handler's stdout reaches the instance's log.
    let logs = node.all.get("py-1").unwrap().logs().clone();
    for _ in 0..50 {
        if logs.tail(100).iter().any(|l| l.stream == "stdout" && l.text == "called 7") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logs.tail(100).iter().any(|l| l.stream == "stdout" && l.text == "called 7"), "{:?}", logs.tail(100));

    // A crash: reported with its exit code, then restarted.
    assert_eq!(kind(node.all.invoke("py-1", br#"{"body":{"die":true}}"#.to_vec(), None).await), Kind::Unavailable);
    let s = node.eventually("py-1", |s| s.restarts == 1 && s.state == InstanceState::Running as i32).await;
    assert!(s.error.contains("exited with code 3"), "{s:?}");
    assert_eq!(call(8).await.unwrap().body, br#"{"n":8}"#);

    // A stuck call: timeout, then a restart.
    assert_eq!(kind(node.all.invoke("py-1", br#"{"body":{"sleep":30}}"#.to_vec(), None).await), Kind::Timeout);
    let s = node.eventually("py-1", |s| s.restarts == 2 && s.state == InstanceState::Running as i32).await;
    assert!(s.error.contains("timeout of 2000 ms"), "{s:?}");

    // Out of memory: the kernel kills it and the reason says so.
    assert_eq!(kind(node.all.invoke("py-1", br#"{"body":{"hog":true}}"#.to_vec(), None).await), Kind::Unavailable);
    let s = node.eventually("py-1", |s| s.restarts == 3).await;
    assert!(s.error.contains("out of memory") || s.error.contains("MemoryError"), "{s:?}");

    // A load error is Failed, with the interpreter's message.
    let s = node.all.deploy(node.spec("py-bad", Runtime::Python, "def handler(:\n", t)).await.unwrap();
    assert_eq!(s.state, InstanceState::Failed as i32, "{s:?}");
    assert!(s.error.contains("SyntaxError"), "{s:?}");

    // Node and Go serve too.
    let js = "exports.handler = async (event) => ({ hello: event.path });";
    let s = node.all.deploy(node.spec("js-1", Runtime::Nodejs, js, t)).await.unwrap();
    assert_eq!(s.state, InstanceState::Running as i32, "{s:?}");
    let r = node.all.invoke("js-1", br#"{"path":"/x"}"#.to_vec(), None).await.unwrap();
    assert_eq!(r.body, br#"{"hello":"/x"}"#);
    let go = "package main\n\nfunc Handler(event map[string]any) (any, error) {\n\treturn map[string]any{\"path\": event[\"path\"]}, nil\n}\n";
    let s = node.all.deploy(node.spec("go-1", Runtime::Go, go, t)).await.unwrap();
    assert_eq!(s.state, InstanceState::Running as i32, "{s:?}");
    let r = node.all.invoke("go-1", br#"{"path":"/y"}"#.to_vec(), None).await.unwrap();
    assert_eq!(r.body, br#"{"path":"/y"}"#);

    assert_eq!(node.containers().await, 3, "py-1, js-1, go-1; py-bad's sandbox is gone");
    node.all.stop("js-1").await.unwrap();
    node.all.stop_all().await;
    assert_eq!(node.containers().await, 0);
    std::fs::remove_dir_all(&node.dir).unwrap();
}
