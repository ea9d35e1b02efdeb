//! A sandbox, inspected while it runs, carries every field of the design's profile; so
//! does the long-lived instance of a deployed API.
#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use bollard::{
    models::ContainerInspectResponse,
    query_parameters::{InspectContainerOptions, ListContainersOptions},
};
use serde_json::json;
use souq_tests::TestCluster;

fn assert_profile(info: ContainerInspectResponse, node: &str, kind: &str) {
    let hc = info.host_config.unwrap();
    assert_eq!(hc.memory, Some(256 * 1024 * 1024));
    assert_eq!(hc.memory_swap, Some(256 * 1024 * 1024));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.pids_limit, Some(50));
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    let opts = hc.security_opt.unwrap_or_default();
    assert!(opts.iter().any(|o| o.starts_with("no-new-privileges")));
    assert!(opts.iter().any(|o| o.starts_with("seccomp=")), "{opts:?}");
    assert!(hc.privileged != Some(true));
    // The one bind mount is the agent's channel directory, read-only.
    let binds = hc.binds.unwrap_or_default();
    assert_eq!(binds.len(), 1, "{binds:?}");
    assert!(binds[0].contains("/channels") && binds[0].ends_with(":/run/souq:ro"), "{binds:?}");
    assert!(hc.mounts.unwrap_or_default().is_empty());
    assert!(hc.tmpfs.unwrap().contains_key("/tmp"));
    let user = info.config.as_ref().and_then(|c| c.user.clone()).unwrap_or_default();
    assert!(!user.is_empty() && !user.starts_with("0") && !user.starts_with("root"), "user {user:?}");
    let config = info.config.unwrap();
    assert!(config.env.unwrap_or_default().iter().all(|e| !e.contains("TOKEN") && !e.contains("SECRET")));
    let labels = config.labels.unwrap();
    assert_eq!(labels["souq.node"], node);
    assert_eq!(labels["souq.kind"], kind);
}

#[tokio::test]
async fn a_deployed_instance_has_the_full_profile() {
    let c = TestCluster::builder().start().await;
    let t = c.user().await;
    let api = c.create_api(&t, "profiled", "python", "def handler(event):\n    return 1\n").await;
    c.deploy(&t, &api, json!({})).await;
    let docker = souq_node_agent::docker::connect(None).unwrap();
    let ids = c.containers();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let info = docker.inspect_container(&ids[0], None::<InspectContainerOptions>).await.unwrap();
    assert_profile(info, &c.nodes[0], "instance");
    c.stop().await;
}

#[tokio::test]
async fn running_sandbox_has_the_full_profile() {
    let c = TestCluster::builder().start().await;
    let t = c.user().await;
    let docker = souq_node_agent::docker::connect(None).unwrap();
    let node = c.nodes[0].clone();

    let run = {
        let (url, http, t) = (c.url.clone(), c.http.clone(), t.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/api/v1/execute"))
                .bearer_auth(t)
                .json(&json!({"runtime": "python", "code": "import time\ntime.sleep(4)\nprint('done')"}))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        })
    };

    let filters = HashMap::from([("label".to_owned(), vec![format!("souq.node={node}")])]);
    let mut inspected = None;
    for _ in 0..100 {
        let list = docker
            .list_containers(Some(ListContainersOptions { filters: Some(filters.clone()), ..Default::default() }))
            .await
            .unwrap();
        if let Some(id) = list.first().and_then(|c| c.id.clone()) {
            inspected = Some(docker.inspect_container(&id, None::<InspectContainerOptions>).await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = inspected.expect("no running sandbox seen");
    assert_profile(info, &node, "session");

    let r = run.await.unwrap();
    assert_eq!(r["stdout"], "done\n", "{r}");
    c.stop().await;
}
