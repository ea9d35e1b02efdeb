//! Attack suite, privileges: no Docker socket, no capabilities, no root, setuid binaries
//! grant nothing, mount/unshare/chroot/ptrace fail, masked /proc and /sys paths stay
//! masked, the environment holds nothing but an allow-list, vsock and AF_ALG sockets
//! and the i386 system call ABI are refused, and core dumps are off.
#![allow(clippy::unwrap_used)]
use serde_json::{Value, json};
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, run_json},
};

/// The only environment variables a sandbox may see: the base image's `PATH` and
/// `LANG`, Docker's `HOSTNAME` and `HOME` (from the uid's passwd entry), and an
/// execute's `TRACEPARENT` (its request's W3C trace context: ids, no secret).
// GOMAXPROCS=2 is what Go programs get so that their threads stay within the pids limit.
const ENV_ALLOWED: [&str; 6] = ["PATH", "HOME", "HOSTNAME", "LANG", "GOMAXPROCS", "TRACEPARENT"];

const PY_PRIVILEGES: &str = r#"
import ctypes, errno, json, os, stat, subprocess, time
res = {}
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    r = getattr(libc, name)(*args)
    return "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
socks = []
for d, dirs, files in os.walk("/"):
    if d == "/":
        dirs[:] = [x for x in dirs if x not in ("proc", "sys")]
    for f in files:
        p = os.path.join(d, f)
        try:
            if stat.S_ISSOCK(os.lstat(p).st_mode) or "docker" in f and "sock" in f:
                socks.append(p)
        except OSError:
            pass
res["sockets"] = socks
# The channel socket's directory belongs to the agent: the sandbox can neither remove
# nor replace the socket, nor add anything beside it.
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, "?")
res["channel unlink"] = attempt(lambda: os.unlink("/run/souq/shim.sock"))
res["channel create"] = attempt(lambda: open("/run/souq/evil", "w"))
res["channel rename"] = attempt(lambda: os.rename("/run/souq/shim.sock", "/run/souq/x"))
# The directory is 0711: the shim reaches its socket by name, nobody can list it.
res["channel listing"] = attempt(lambda: os.listdir("/run/souq"))
res["channel socket present"] = stat.S_ISSOCK(os.stat("/run/souq/shim.sock").st_mode)
res["socket paths"] = [p for p in ["/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock", "/run/podman/podman.sock"] if os.path.lexists(p)]
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"]:
    res[k] = status[k].strip()
res["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()] + os.getgroups()
suid = []
for d, _, files in os.walk("/usr"):
    for f in files:
        p = os.path.join(d, f)
        try:
            if os.lstat(p).st_mode & (stat.S_ISUID | stat.S_ISGID):
                suid.append(p)
        except OSError:
            pass
res["setuid binaries"] = sorted(suid)
# su (setuid root) waits for a password: while it waits, its effective uid shows.
su = subprocess.Popen(["/usr/bin/su", "-c", "id -u", "root"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
for _ in range(100):
    try:
        st = dict(l.split(":", 1) for l in open("/proc/%d/status" % su.pid).read().splitlines())
        uids, name = st["Uid"].split(), st["Name"].strip()
    except (OSError, KeyError):
        uids, name = None, None
    if name == "su" or su.poll() is not None:
        break
    time.sleep(0.02)
res["su uids while running"] = uids
su.kill()
out, err = su.communicate()
res["su"] = [su.returncode, out.decode(), err.decode()[:200]]
m = subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"], capture_output=True, text=True)
res["mount binary"] = [m.returncode, m.stderr.strip()[:200]]
res["mount(2) tmpfs"] = call("mount", b"none", b"/tmp", b"tmpfs", 0, None)
res["mount(2) bind"] = call("mount", b"/", b"/tmp", None, 0x1000, None)
res["umount2 /proc/kcore"] = call("umount2", b"/proc/kcore", 2)
for flag, name in [(0x10000000, "user"), (0x00020000, "mount"), (0x10020000, "user+mount"), (0x40000000, "net"), (0x20000000, "pid")]:
    res["unshare " + name] = call("unshare", flag)
res["chroot"] = call("chroot", b"/tmp")
res["setuid(0)"] = call("setuid", 0)
res["setgid(0)"] = call("setgid", 0)
for p in ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats",
          "/proc/timer_stats", "/proc/acpi", "/proc/scsi", "/sys/firmware"]:
    try:
        if os.path.isdir(p):
            got = os.listdir(p)
        else:
            with open(p, "rb") as f:
                got = f.read(64)
        res["read " + p] = "empty" if not got else "DATA %r" % (got[:40],)
    except OSError as e:
        res["read " + p] = "error " + errno.errorcode.get(e.errno, "?")
for p, data in [("/proc/sys/kernel/hostname", "x"), ("/proc/sys/vm/drop_caches", "3"), ("/proc/sysrq-trigger", "h"),
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1"), ("/sys/fs/cgroup/memory/release_agent", "/tmp/x"),
                ("/sys/fs/cgroup/pids/pids.max", "max"), ("/sys/kernel/uevent_helper", "/tmp/x")]:
    try:
        with open(p, "w") as f:
            f.write(data)
        res["write " + p] = "ok"
    except OSError as e:
        res["write " + p] = "error " + errno.errorcode.get(e.errno, "?")
res["environ"] = sorted(os.environ)
res["environ of pid 1"] = sorted(kv.split(b"=", 1)[0].decode() for kv in open("/proc/1/environ", "rb").read().split(b"\0") if kv)
res["environ text"] = repr(dict(os.environ)) + repr(open("/proc/1/environ", "rb").read())
print(json.dumps(res))
"#;

fn strs(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

/// Asserts the environment names are allowed, and that no value of this process's own
/// environment (where the agent runs) other than the allowed ones shows up in `text`.
fn assert_env_clean(runtime: &str, names: &[String], text: &str) {
    let extra: Vec<_> = names.iter().filter(|n| !ENV_ALLOWED.contains(&n.as_str())).collect();
    assert!(extra.is_empty(), "{runtime}: environment variables beyond the allow-list: {extra:?}");
    for (k, v) in std::env::vars() {
        if !ENV_ALLOWED.contains(&k.as_str()) && v.len() >= 8 {
            assert!(!text.contains(&v), "{runtime}: the value of the agent's {k} is in the sandbox");
        }
    }
}

#[tokio::test]
async fn python_gets_no_privilege() {
    let c = TestCluster::builder().start().await;
    let t = c.user().await;
    let r = run_json(&c, &t, "python", PY_PRIVILEGES, "").await;
    let mut shown = r.clone();
    shown.as_object_mut().unwrap().remove("environ text");
    eprintln!("python privileges: {shown:#}");

    // The only socket is the agent's channel, in a directory mounted read-only that the
    // sandbox cannot even list (0711): a walk of the whole tree finds no socket at all.
    assert_eq!(r["sockets"], json!([]), "socket files in the sandbox");
    assert_eq!(r["channel listing"], "EACCES", "{r}");
    assert_eq!(r["channel socket present"], true, "{r}");
    for what in ["channel unlink", "channel create", "channel rename"] {
        assert_eq!(r[what], "EROFS", "{what}: {r}");
    }
    assert_eq!(r["socket paths"], json!([]));
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(r[k], "0000000000000000", "{k}");
    }
    assert_eq!(r["NoNewPrivs"], "1");
    assert_eq!(r["Seccomp"], "2", "the default seccomp profile is in force");
    let ids: Vec<i64> = r["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert!(ids.iter().all(|id| *id != 0), "uid, euid, gid, egid or a group is 0: {ids:?}");

    assert!(!strs(&r["setuid binaries"]).is_empty(), "the image has no setuid binary to try");
    let su = &r["su uids while running"];
    assert!(su.is_array(), "su was never seen running: {}", r["su"]);
    assert!(strs(su).iter().all(|u| u != "0"), "setuid su ran with uid 0: {su}");
    assert_ne!(r["su"][1].as_str().unwrap().trim(), "0", "su ran a command as root: {}", r["su"]);
    assert_ne!(r["mount binary"][0], 0, "setuid mount mounted: {}", r["mount binary"]);

    for k in ["mount(2) tmpfs", "mount(2) bind", "umount2 /proc/kcore", "unshare user", "unshare mount", "unshare user+mount"] {
        assert_ne!(r[k], "ok", "{k} succeeded");
    }
    for k in ["unshare net", "unshare pid", "chroot", "setuid(0)", "setgid(0)"] {
        assert_ne!(r[k], "ok", "{k} succeeded");
    }
    for p in ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats", "/proc/timer_stats", "/proc/acpi", "/proc/scsi", "/sys/firmware"] {
        let v = r[format!("read {p}")].as_str().unwrap();
        assert!(v == "empty" || v.starts_with("error"), "{p} is not masked: {v}");
    }
    for (k, v) in r.as_object().unwrap().iter().filter(|(k, _)| k.starts_with("write ")) {
        assert!(v.as_str().unwrap().starts_with("error"), "{k}: {v}");
    }
    assert_env_clean("python", &strs(&r["environ"]), r["environ text"].as_str().unwrap());
    assert_env_clean("python pid 1", &strs(&r["environ of pid 1"]), r["environ text"].as_str().unwrap());
    assert_healthy(&c, &t).await;
    c.stop().await;
}

#[tokio::test]
async fn node_and_go_get_no_privilege_either() {
    let c = TestCluster::builder().start().await;
    let t = c.user().await;
    let node = "const s = require('fs').readFileSync('/proc/self/status', 'utf8');\n\
        const f = k => s.split('\\n').find(l => l.startsWith(k + ':')).split(':')[1].trim();\n\
        console.log(JSON.stringify({uid: process.getuid(), euid: process.geteuid(), gid: process.getgid(), cap_eff: f('CapEff'), nnp: f('NoNewPrivs'), env: Object.keys(process.env).sort(), text: JSON.stringify(process.env)}));";
    let go = "package main\nimport (\"encoding/json\";\"fmt\";\"os\";\"sort\";\"strings\")\n\
        func main() {\n\ts, _ := os.ReadFile(\"/proc/self/status\")\n\tf := map[string]string{}\n\
        \tfor _, l := range strings.Split(string(s), \"\\n\") {\n\t\tif k, v, ok := strings.Cut(l, \":\"); ok {\n\t\t\tf[k] = strings.TrimSpace(v)\n\t\t}\n\t}\n\
        \tvar env []string\n\tfor _, kv := range os.Environ() {\n\t\tenv = append(env, strings.SplitN(kv, \"=\", 2)[0])\n\t}\n\tsort.Strings(env)\n\
        \tout, _ := json.Marshal(map[string]any{\"uid\": os.Getuid(), \"euid\": os.Geteuid(), \"gid\": os.Getgid(), \"cap_eff\": f[\"CapEff\"], \"nnp\": f[\"NoNewPrivs\"], \"env\": env, \"text\": strings.Join(os.Environ(), \"\\n\")})\n\
        \tfmt.Println(string(out))\n}";
    for (runtime, code) in [("node", node), ("go", go)] {
        let r = run_json(&c, &t, runtime, code, "").await;
        eprintln!("{runtime}: uid {} euid {} gid {} CapEff {} NoNewPrivs {} env {}", r["uid"], r["euid"], r["gid"], r["cap_eff"], r["nnp"], r["env"]);
        for k in ["uid", "euid", "gid"] {
            assert_ne!(r[k], 0, "{runtime}: {k}");
        }
        assert_eq!(r["cap_eff"], "0000000000000000", "{runtime}");
        assert_eq!(r["nnp"], "1", "{runtime}");
        assert_env_clean(runtime, &strs(&r["env"]), r["text"].as_str().unwrap());
    }
    assert_healthy(&c, &t).await;
    c.stop().await;
}

/// PTRACE_ATTACH to PID 1 (tini), to the program's own child and, from one child, to a
/// sibling; a successful attach is detached again at once.
const PY_PTRACE: &str = r#"
import ctypes, errno, json, os, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
def attach(pid):
    if libc.ptrace(16, pid, None, None) != 0:
        return errno.errorcode.get(ctypes.get_errno(), "?")
    os.waitpid(pid, 0x40000000)  # __WALL: the tracee stops
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    return "ok"
res = {"kernel": os.uname().release, "seccomp": [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0]}
res["pid 1"] = attach(1)
child = subprocess.Popen(["sleep", "60"])
time.sleep(0.1)
res["child"] = attach(child.pid)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, attach(child.pid).encode())
    os._exit(0)
os.waitpid(pid, 0)
res["sibling"] = os.read(r, 64).decode()
child.kill()
print(json.dumps(res))
"#;

#[tokio::test]
async fn ptrace_fails() {
    let c = TestCluster::builder().start().await;
    let t = c.user().await;
    let r = run_json(&c, &t, "python", PY_PTRACE, "").await;
    eprintln!("ptrace: {r}");
    for target in ["pid 1", "child", "sibling"] {
        assert_ne!(r[target], "ok", "PTRACE_ATTACH to {target} succeeded (kernel {}, seccomp mode {})", r["kernel"], r["seccomp"]);
    }
    assert_healthy(&c, &t).await;
    c.stop().await;
}

/// Sockets of families that reach past the sandbox's network namespace (AF_VSOCK: the
/// host's and hypervisor's vsock services) or are pure kernel attack surface (AF_ALG),
/// also with high bits above the int family and through i386's socketcall (`int 0x80`,
/// from a child, which SIGSYS may kill); the ordinary families still open. Nothing is
/// ever connected: every socket is only created and closed. And no core dumps.
const PY_SOCKET_FAMILIES: &str = r#"
import ctypes, errno, json, mmap, os, resource, socket
libc = ctypes.CDLL(None, use_errno=True)
def err(e):
    return errno.errorcode.get(e, str(e))
def make(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return "ok"
    except OSError as e:
        return err(e.errno)
res = {"vsock": make(40, socket.SOCK_STREAM), "vsock dgram": make(40, socket.SOCK_DGRAM), "alg": make(38, socket.SOCK_SEQPACKET),
       "unix": make(socket.AF_UNIX, socket.SOCK_STREAM), "unix dgram": make(socket.AF_UNIX, socket.SOCK_DGRAM),
       "inet": make(socket.AF_INET, socket.SOCK_STREAM), "inet udp": make(socket.AF_INET, socket.SOCK_DGRAM),
       "inet6": make(socket.AF_INET6, socket.SOCK_STREAM), "netlink": make(socket.AF_NETLINK, socket.SOCK_RAW, 0)}
try:
    socket.socketpair(40, socket.SOCK_STREAM)
    res["socketpair vsock"] = "ok"
except OSError as e:
    res["socketpair vsock"] = err(e.errno)
a, b = socket.socketpair()
res["socketpair unix"] = "ok"
a.close(); b.close()
libc.syscall.restype = ctypes.c_long
libc.syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
fd = libc.syscall(41, (1 << 32) | 40, 1, 0)
res["vsock high bits"] = "fd" if fd >= 0 else err(ctypes.get_errno())
if fd >= 0:
    os.close(fd)
# x86_64 code calling the i386 ABI: socketcall(SYS_SOCKET, {40, 1, 0}) through int 0x80,
# with the arguments below 4 GiB (MAP_32BIT) where a 32-bit pointer reaches them.
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
page = libc.mmap(None, 4096, 7, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40, -1, 0)
if page in (None, ctypes.c_void_p(-1).value):
    res["i386 socketcall"] = "no mmap: " + err(ctypes.get_errno())
else:
    args = page + 64
    ctypes.memmove(args, (ctypes.c_uint32 * 3)(40, 1, 0), 12)
    code = b"\x53\xb8\x66\x00\x00\x00\xbb\x01\x00\x00\x00\xb9" + args.to_bytes(4, "little") + b"\xcd\x80\x5b\xc3"
    ctypes.memmove(page, code, len(code))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        got = ctypes.CFUNCTYPE(ctypes.c_int)(page)()
        os.write(w, ("fd" if got >= 0 else err(-got)).encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    out = os.read(r, 64).decode()
    res["i386 socketcall"] = out if out else "signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status) else "exit %d" % os.WEXITSTATUS(status)
res["core"] = list(resource.getrlimit(resource.RLIMIT_CORE))
print(json.dumps(res))
"#;

#[tokio::test]
async fn vsock_and_alg_sockets_are_refused_and_core_dumps_are_off() {
    let c = TestCluster::builder().start().await;
    let t = c.user().await;
    let r = run_json(&c, &t, "python", PY_SOCKET_FAMILIES, "").await;
    eprintln!("socket families: {r}");
    for k in ["vsock", "vsock dgram", "alg", "socketpair vsock", "vsock high bits"] {
        assert_eq!(r[k], "EPERM", "{k}: {r}");
    }
    // The i386 ABI is not allowed at all: the child dies of SIGSYS before socketcall runs.
    assert_eq!(r["i386 socketcall"], "signal 31", "{r}");
    for k in ["unix", "unix dgram", "inet", "inet udp", "inet6", "netlink", "socketpair unix"] {
        assert_eq!(r[k], "ok", "{k}: {r}");
    }
    assert_eq!(r["core"], json!([0, 0]), "RLIMIT_CORE");
    assert_healthy(&c, &t).await;
    c.stop().await;
}
