//! The sandbox profile: the limits an operator sets and the container spec they become,
//! one spec for both shim modes. Pure; no request can loosen any of it.
use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use souq_proto::Runtime;

/// Label naming the node that made a container.
pub const LABEL_NODE: &str = "souq.node";
/// Label naming the execution or instance a container serves.
pub const LABEL_INSTANCE: &str = "souq.instance";
/// Label naming what a container is for (`session`: a warm sandbox; `instance`: an
/// instance of a deployed API).
pub const LABEL_KIND: &str = "souq.kind";

/// What a sandbox's shim does; the first argument of its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimMode {
    /// Waits for snippets and runs each in a fresh process (warm execute sandboxes).
    Session,
    /// Loads one handler, then answers calls to it (instances of deployed APIs).
    Serve,
}

impl ShimMode {
    /// The shim's mode argument.
    pub fn arg(self) -> &'static str {
        match self {
            ShimMode::Session => "session",
            ShimMode::Serve => "serve",
        }
    }

    /// The value of the [`LABEL_KIND`] label.
    pub fn kind(self) -> &'static str {
        match self {
            ShimMode::Session => "session",
            ShimMode::Serve => "instance",
        }
    }
}

/// The labels of a sandbox made by `node` in `mode` for `id` (a session's own id, or the
/// instance id): what `remove_own_containers` and operators find it by.
pub fn labels(node: &str, mode: ShimMode, id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_NODE.to_owned(), node.to_owned()),
        (LABEL_INSTANCE.to_owned(), id.to_owned()),
        (LABEL_KIND.to_owned(), mode.kind().to_owned()),
    ])
}

/// Largest container log file before Docker rotates it, and how many it keeps: the
/// sandbox's stdout and stderr can never fill the host's disk. (The agent keeps what it
/// shows in its own bounded buffer; see `instances::log_buffer`.)
pub const LOG_MAX_SIZE: &str = "1m";
/// See [`LOG_MAX_SIZE`].
pub const LOG_MAX_FILE: &str = "1";

/// The seccomp profile of every sandbox: every system call but a denylist (tracing,
/// namespaces and mounts, kernel administration, clocks, large attack surfaces), and
/// clone only without namespace flags. Made by `deploy/seccomp/generate.py`.
pub const SECCOMP_PROFILE: &str = include_str!("../../../deploy/seccomp/sandbox.json");

/// Uid and gid every sandbox runs as (nobody).
pub const SANDBOX_USER: &str = "65534:65534";

/// The sandbox limits of one node, set by its operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory, and memory plus swap (so no swap), in MiB.
    pub memory_mb: u64,
    /// CPU in thousandths of a core.
    pub cpus_milli: u32,
    /// Most processes and threads at once.
    pub pids: u32,
    /// Size of the /tmp tmpfs in MiB.
    pub tmpfs_mb: u64,
    /// Longest wall time of one execute, in ms; a request may only ask for less.
    pub max_timeout_ms: u64,
    /// Most bytes of stdout plus stderr kept; past it the run is cut and marked truncated.
    pub output_bytes: usize,
    /// Most open files.
    pub nofile: u64,
    /// Largest file the sandbox may write, in MiB.
    pub fsize_mb: u64,
}

impl Limits {
    /// The defaults: the one definition the operator's options start from.
    pub const DEFAULT: Limits = Limits {
        memory_mb: 256,
        cpus_milli: 500,
        pids: 50,
        tmpfs_mb: 64,
        max_timeout_ms: souq_proto::limits::DEFAULT_TIMEOUT_MS,
        output_bytes: 1024 * 1024,
        nofile: 256,
        fsize_mb: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

fn ulimit(name: &str, value: i64) -> ResourcesUlimits {
    ResourcesUlimits { name: Some(name.into()), soft: Some(value), hard: Some(value) }
}

/// The container spec of a sandbox whose shim runs in `mode`, talking over the socket
/// `socket` in the agent's directory `channel`, mounted read-only. Both modes get the
/// very same profile; only the command and the labels differ.
pub fn sandbox_container(
    mode: ShimMode,
    image: &str,
    runtime: Runtime,
    limits: &Limits,
    labels: HashMap<String, String>,
    channel: &std::path::Path,
    socket: &str,
) -> ContainerCreateBody {
    let mount = socket.rsplit_once('/').map_or("/run/souq", |(dir, _)| dir);
    let mib = |n: u64| i64::try_from(n.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
    // Go compiles and then runs its binary from /tmp; the others never need exec there.
    let exec = if runtime == Runtime::Go { "exec" } else { "noexec" };
    let tmpfs = HashMap::from([(
        "/tmp".to_owned(),
        format!("rw,{exec},nosuid,nodev,size={}m,mode=1777", limits.tmpfs_mb),
    )]);
    ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(vec![mode.arg().into(), socket.into()]),
        user: Some(SANDBOX_USER.into()),
        labels: Some(labels),
        env: Some(Vec::new()),
        working_dir: Some("/tmp".into()),
        // Nothing is attached: the shim talks over the channel socket.
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        open_stdin: Some(false),
        tty: Some(false),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            memory: Some(mib(limits.memory_mb)),
            memory_swap: Some(mib(limits.memory_mb)),
            nano_cpus: Some(i64::from(limits.cpus_milli) * 1_000_000),
            pids_limit: Some(i64::from(limits.pids)),
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            // The one bind mount: the agent's channel directory, read-only.
            binds: Some(vec![format!("{}:{mount}:ro", channel.display())]),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into(), format!("seccomp={SECCOMP_PROFILE}")]),
            ulimits: Some(vec![
                ulimit("nofile", i64::try_from(limits.nofile).unwrap_or(i64::MAX)),
                ulimit("fsize", mib(limits.fsize_mb)),
                // No core dumps: a crash writes no image of the program's memory.
                ulimit("core", 0),
            ]),
            privileged: Some(false),
            // tini as PID 1: the program can signal itself and zombies are reaped.
            init: Some(true),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                    ("max-file".to_owned(), LOG_MAX_FILE.to_owned()),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &str = "/var/lib/souq/channels/x";

    fn body(mode: ShimMode, runtime: Runtime) -> ContainerCreateBody {
        let labels = labels("n1", mode, "abc");
        sandbox_container(mode, "img", runtime, &Limits::default(), labels, CHANNEL.as_ref(), "/run/souq/shim.sock")
    }

    #[test]
    fn profile_is_the_design_floor() {
        let body = body(ShimMode::Session, Runtime::Python);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.memory, Some(256 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory);
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.pids_limit, Some(50));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        let opts = hc.security_opt.unwrap();
        assert!(opts.contains(&"no-new-privileges".to_owned()));
        assert!(opts.iter().any(|o| o.starts_with("seccomp={") && !o.contains("\"ptrace\"")));
        assert_eq!(hc.binds, Some(vec!["/var/lib/souq/channels/x:/run/souq:ro".to_owned()]));
        assert!(hc.mounts.is_none());
        assert_eq!(body.cmd, Some(vec!["session".to_owned(), "/run/souq/shim.sock".to_owned()]));
        assert_eq!(body.user.as_deref(), Some(SANDBOX_USER));
        assert!(hc.tmpfs.unwrap()["/tmp"].contains("noexec"));
        let log = hc.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let log = log.config.unwrap();
        assert_eq!((log["max-size"].as_str(), log["max-file"].as_str()), ("1m", "1"));
        assert_eq!(body.labels.unwrap()[LABEL_KIND], "session");
    }

    #[test]
    fn every_sandbox_gets_the_ulimits_and_no_core_dumps() {
        for mode in [ShimMode::Session, ShimMode::Serve] {
            for runtime in Runtime::ALL {
                let ulimits = body(mode, runtime).host_config.unwrap().ulimits.unwrap();
                let got: Vec<_> = ulimits.iter().map(|u| (u.name.as_deref().unwrap(), u.soft, u.hard)).collect();
                assert_eq!(
                    got,
                    [("nofile", Some(256), Some(256)), ("fsize", Some(64 << 20), Some(64 << 20)), ("core", Some(0), Some(0))],
                    "{mode:?} {runtime:?}"
                );
            }
        }
    }

    #[test]
    fn the_seccomp_profile_refuses_vsock_and_alg_sockets_and_foreign_abis() {
        let profile: serde_json::Value = serde_json::from_str(SECCOMP_PROFILE).unwrap();
        assert_eq!(profile["archMap"], serde_json::json!([{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}]));
        let rules = profile["syscalls"].as_array().unwrap();
        let unconditional = rules.iter().find(|r| r.get("args").is_none() && r["action"] == "SCMP_ACT_ALLOW").unwrap();
        assert!(!unconditional["names"].as_array().unwrap().iter().any(|n| n == "socket" || n == "socketpair"));
        // A family passes if one socket rule allows it: 0..38 by LT, the rest one by one.
        let allows = |family: u64| {
            rules.iter().filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == "socket")).any(|r| {
                let a = &r["args"][0];
                let v = a["value"].as_u64().unwrap();
                match a["op"].as_str().unwrap() {
                    "SCMP_CMP_LT" => family < v,
                    "SCMP_CMP_EQ" => family == v,
                    op => panic!("socket rule with {op}: a value with high bits set might pass"),
                }
            })
        };
        for (family, allowed) in [(1, true), (2, true), (10, true), (16, true), (17, true), (38, false), (39, true), (40, false), (45, true), (46, false)] {
            assert_eq!(allows(family), allowed, "family {family}");
        }
        assert!(!allows((1 << 32) | 40), "the high 32 bits must not hide AF_VSOCK");
    }

    #[test]
    fn an_instance_gets_the_session_profile_with_serve_and_its_labels() {
        for runtime in Runtime::ALL {
            let serve = body(ShimMode::Serve, runtime);
            assert_eq!(serve.cmd, Some(vec!["serve".to_owned(), "/run/souq/shim.sock".to_owned()]));
            let l = serve.labels.clone().unwrap();
            assert_eq!((l[LABEL_KIND].as_str(), l[LABEL_INSTANCE].as_str(), l[LABEL_NODE].as_str()), ("instance", "abc", "n1"));
            // Everything else, the whole sandbox profile, is the session's to the byte.
            let mut session = body(ShimMode::Session, runtime);
            session.cmd.clone_from(&serve.cmd);
            session.labels.clone_from(&serve.labels);
            assert_eq!(session, serve);
        }
        assert!(body(ShimMode::Serve, Runtime::Go).host_config.unwrap().tmpfs.unwrap()["/tmp"].contains(",exec,"));
    }
}
