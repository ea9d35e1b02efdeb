"""A small kubelet stand-in for tests/chart/run_test.py: runs the pods of rendered
Kubernetes objects as Docker containers, the way a kubelet would, and refuses what a
kubelet would refuse. It covers what Souq's chart uses:
  - command/args (command replaces the image ENTRYPOINT, args its CMD), env with $(VAR)
    expansion, valueFrom (secretKeyRef, configMapKeyRef, fieldRef: status.podIP,
    spec.nodeName, metadata.name/namespace), envFrom (secretRef, configMapRef);
  - volumes: secret (items, defaultMode, mode, fsGroup ownership), configMap, emptyDir,
    hostPath (type Socket, Directory, DirectoryOrCreate, File...);
  - securityContext: runAsUser/Group, runAsNonRoot, fsGroup, readOnlyRootFilesystem,
    capabilities, allowPrivilegeEscalation, privileged; memory and CPU limits;
  - Services: each name is a network alias of the pods its selector picks; every
    targetPort must be a declared container port (a Service port that differs from its
    targetPort is reachable only at the targetPort here, which the stand-in checks);
  - probes (startup, then readiness): tcpSocket, httpGet, exec, and grpc as a TCP check
    of its port (the stand-in speaks no gRPC); the pod's IP is fixed in
    advance so status.podIP can be given before the container starts;
  - several nodes (scripts/cluster.py): each pod has its node (spec.nodeName), and a
    DaemonSet runs once on each node its nodeSelector matches (nodes_for).
Everything it makes is labelled souq.chart-run=<run id> and removed by cleanup().
"""
import base64
import json
import os
import random
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import urllib.request


class KubeletError(Exception):
    """What a kubelet (or the API server) would refuse, or a pod that failed."""


def docker(*args, check=True, timeout=600):
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise KubeletError(f"docker {' '.join(args[:3])}...: {p.stderr.strip()}")
    return p


class Pod:
    def __init__(self, name, kind, owner, spec, labels, ip, node):
        self.name, self.kind, self.owner, self.spec, self.labels = name, kind, owner, spec, labels
        self.ip, self.node = ip, node
        self.containers = []  # (container spec, docker name)
        self.aliases = []
        # Extra Docker labels on its containers (scripts/cluster.py: souq.role, souq.node).
        self.docker_labels = {}
        # scripts/cluster.py: the network its IP is on (None: the kubelet's), further
        # (network, ip) it is connected to before it starts, and the `docker create`
        # arguments of each container (to start it again from another image).
        self.network = None
        self.extra_networks = []
        self.create_args = {}

    def port(self, container, port):
        """A container port by number or name; refuses ports the container does not declare."""
        ports = container.get("ports") or []
        for p in ports:
            if port == p.get("name") or port == p.get("containerPort"):
                return p["containerPort"]
        raise KubeletError(f"pod {self.name}: port {port!r} is not declared by container {container['name']}")


class Kubelet:
    def __init__(self, run_id, namespace, node_name, subnet_prefix, say, prefix="souq-chartrun", scratch_dir=None):
        self.run_id, self.namespace, self.node, self.say = run_id, namespace, node_name, say
        self.label = f"souq.chart-run={run_id}"
        # Names of its network and containers: <prefix>-<run id>[-<pod>-<container>].
        self.prefix = prefix
        self.network = f"{prefix}-{run_id}"
        self.subnet_prefix = subnet_prefix
        self.next_ip = 10
        self.secrets, self.configmaps = {}, {}
        self.pods = []
        # Node name -> its labels, for DaemonSet nodeSelectors (one unlabelled node by default).
        self.nodes = {node_name: {}}
        self.scratch = tempfile.mkdtemp(prefix=f"{prefix}-{run_id}-vol-", dir=scratch_dir)
        os.chmod(self.scratch, 0o755)
        self.made_network = False

    # --- objects -------------------------------------------------------------------
    def add_config(self, obj):
        name = obj["metadata"]["name"]
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        if obj["kind"] == "Secret":
            data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
            self.secrets[name] = data
        else:
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            self.configmaps[name] = data

    def delete_config(self, obj):
        (self.secrets if obj["kind"] == "Secret" else self.configmaps).pop(obj["metadata"]["name"], None)

    def _lookup(self, kind, ref, key=None):
        store = self.secrets if kind == "Secret" else self.configmaps
        name = ref.get("name")
        if name not in store:
            if ref.get("optional"):
                return None
            raise KubeletError(f"{kind} {name!r} not found (CreateContainerConfigError)")
        if key is None:
            return store[name]
        if key not in store[name]:
            if ref.get("optional"):
                return None
            raise KubeletError(f"{kind} {name!r} has no key {key!r} (CreateContainerConfigError)")
        return store[name][key]

    # --- network ---------------------------------------------------------------------
    def make_network(self):
        """A private network on a free /24 (random under 10.200-250; retried on overlap)."""
        for attempt in range(8):
            if attempt:
                self.subnet_prefix = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
            p = docker("network", "create", "--label", self.label, "--subnet", f"{self.subnet_prefix}.0/24",
                       "--gateway", f"{self.subnet_prefix}.1", self.network, check=False)
            if p.returncode == 0:
                self.made_network = True
                return
            if "overlap" not in p.stderr:
                break
        raise KubeletError(f"docker network create {self.network}: {p.stderr.strip()}")

    def take_ip(self):
        ip = f"{self.subnet_prefix}.{self.next_ip}"
        self.next_ip += 1
        return ip

    # --- pods -------------------------------------------------------------------------
    def new_pod(self, kind, owner, template, index=0, node=None):
        meta = template.get("metadata") or {}
        name = f"{owner}-{index}" if kind != "Pod" else owner
        pod = Pod(name, kind, owner, template["spec"], meta.get("labels") or {}, self.take_ip(), node or self.node)
        self.pods.append(pod)
        return pod

    def nodes_for(self, template):
        """The nodes a DaemonSet's pod template runs on: those whose labels match its
        nodeSelector (affinity and taints are not simulated)."""
        sel = template["spec"].get("nodeSelector") or {}
        return [n for n, labels in self.nodes.items() if all(labels.get(k) == v for k, v in sel.items())]

    def bind_services(self, services):
        """Each Service's name becomes an alias of the pods it selects; its targetPorts
        must be declared ports of those pods."""
        for svc in services:
            sel = svc["spec"].get("selector") or {}
            picked = [p for p in self.pods if sel and all(p.labels.get(k) == v for k, v in sel.items())]
            if not picked:
                raise KubeletError(f"Service {svc['metadata']['name']} selects no pod (selector {sel})")
            for p in picked:
                p.aliases.append(svc["metadata"]["name"])
                for sp in svc["spec"]["ports"]:
                    p.port(p.spec["containers"][0], sp.get("targetPort", sp["port"]))

    def service_target(self, svc, port):
        """(pod, container port) that `svc`:`port` reaches: its targetPort on a selected pod."""
        sel = svc["spec"]["selector"]
        sp = next(p for p in svc["spec"]["ports"] if p["port"] == port)
        pod = next(p for p in self.pods if all(p.labels.get(k) == v for k, v in sel.items()))
        return pod, pod.port(pod.spec["containers"][0], sp.get("targetPort", sp["port"]))

    def _env(self, pod, c):
        env, order = {}, []

        def expand(v):
            # Kubernetes expands $(NAME) of variables defined earlier; $$ escapes.
            return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                          lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), v)

        def put(k, v):
            if k not in env:
                order.append(k)
            env[k] = v

        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            kind, ref = ("Secret", ef["secretRef"]) if "secretRef" in ef else ("ConfigMap", ef["configMapRef"])
            for k, v in (self._lookup(kind, ref) or {}).items():
                put(prefix + k, v.decode())
        for e in c.get("env") or []:
            if "value" in e:
                put(e["name"], expand(str(e["value"])))
                continue
            vf = e.get("valueFrom")
            if not vf:
                put(e["name"], "")
            elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
                kind, ref = ("Secret", vf["secretKeyRef"]) if "secretKeyRef" in vf else ("ConfigMap", vf["configMapKeyRef"])
                v = self._lookup(kind, ref, ref["key"])
                if v is not None:
                    put(e["name"], v.decode())
            elif "fieldRef" in vf:
                path = vf["fieldRef"]["fieldPath"]
                fields = {"status.podIP": pod.ip, "spec.nodeName": pod.node, "metadata.name": pod.name,
                          "metadata.namespace": self.namespace, "status.hostIP": f"{self.subnet_prefix}.1"}
                if path not in fields:
                    raise KubeletError(f"pod {pod.name}: fieldRef {path} is not supported by the stand-in")
                put(e["name"], fields[path])
            else:
                raise KubeletError(f"pod {pod.name}: env {e['name']}: unsupported valueFrom {list(vf)}")
        return [(k, env[k]) for k in order]

    def _volumes(self, pod, c, fs_group):
        vols = {v["name"]: v for v in pod.spec.get("volumes") or []}
        args = []
        for m in c.get("volumeMounts") or []:
            v = vols.get(m["name"])
            if v is None:
                raise KubeletError(f"pod {pod.name}: volumeMount {m['name']!r} names no volume")
            if m.get("subPath"):
                raise KubeletError(f"pod {pod.name}: subPath is not supported by the stand-in")
            ro = ",readonly" if m.get("readOnly") else ""
            target = m["mountPath"]
            if "emptyDir" in v:
                d = tempfile.mkdtemp(prefix="empty-", dir=self.scratch)
                os.chmod(d, 0o777)  # as the kubelet makes emptyDirs
                args += ["--mount", f"type=bind,source={d},target={target}{ro}"]
            elif "hostPath" in v:
                hp = v["hostPath"]
                path, typ = hp["path"], hp.get("type", "")
                checks = {"Socket": stat.S_ISSOCK, "Directory": stat.S_ISDIR, "File": stat.S_ISREG,
                          "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}
                if typ == "DirectoryOrCreate":
                    os.makedirs(path, mode=0o755, exist_ok=True)
                elif typ in checks:
                    if not os.path.exists(path) or not checks[typ](os.stat(path).st_mode):
                        raise KubeletError(f"pod {pod.name}: hostPath {path} is not a {typ}")
                elif typ not in ("",):
                    raise KubeletError(f"pod {pod.name}: hostPath type {typ} not supported by the stand-in")
                args += ["--mount", f"type=bind,source={path},target={target}{ro}"]
            elif "secret" in v or "configMap" in v:
                kind, src = ("Secret", v["secret"]) if "secret" in v else ("ConfigMap", v["configMap"])
                ref = {"name": src.get("secretName", src.get("name")), "optional": src.get("optional")}
                data = self._lookup(kind, ref) or {}
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                d = tempfile.mkdtemp(prefix=f"{m['name']}-", dir=self.scratch)
                os.chmod(d, 0o755)
                for it in items:
                    if it["key"] not in data:
                        raise KubeletError(f"pod {pod.name}: {kind} {ref['name']!r} has no key {it['key']!r}")
                    f = os.path.join(d, it["path"])
                    os.makedirs(os.path.dirname(f), exist_ok=True)
                    with open(f, "wb") as fh:
                        fh.write(data[it["key"]])
                    os.chown(f, 0, fs_group if fs_group is not None else 0)
                    os.chmod(f, it.get("mode", src.get("defaultMode", 0o644)))
                args += ["--mount", f"type=bind,source={d},target={target},readonly"]
            else:
                raise KubeletError(f"pod {pod.name}: volume {m['name']}: kind {list(v)} not supported by the stand-in")
        return args

    def _security(self, pod, c, image_user):
        psc, csc = pod.spec.get("securityContext") or {}, c.get("securityContext") or {}
        get = lambda k: csc.get(k, psc.get(k))  # noqa: E731
        uid, gid = get("runAsUser"), get("runAsGroup")
        args = []
        effective = uid if uid is not None else image_user
        if get("runAsNonRoot") and str(effective).split(":")[0] in ("0", "root", ""):
            raise KubeletError(f"pod {pod.name}: runAsNonRoot but the user would be root (CreateContainerConfigError)")
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        if psc.get("fsGroup") is not None:
            args += ["--group-add", str(psc["fsGroup"])]
        if csc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if csc.get("privileged"):
            args.append("--privileged")
        caps = csc.get("capabilities") or {}
        args += [a for cap in caps.get("drop") or [] for a in ("--cap-drop", cap)]
        args += [a for cap in caps.get("add") or [] for a in ("--cap-add", cap)]
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        return args

    def start(self, pod, detach=True):
        """Starts the pod's containers (one per container spec). Returns their names."""
        if pod.spec.get("initContainers"):
            raise KubeletError(f"pod {pod.name}: initContainers are not supported by the stand-in")
        for c in pod.spec["containers"]:
            image = c["image"]
            if c.get("imagePullPolicy") == "Always":
                raise KubeletError(f"pod {pod.name}: imagePullPolicy Always needs a registry")
            inspect = docker("image", "inspect", image, check=False)
            if inspect.returncode != 0:
                raise KubeletError(f"pod {pod.name}: image {image} is not present (ErrImageNeverPull offline)")
            image_user = json.loads(inspect.stdout)[0]["Config"].get("User", "")
            name = f"{self.prefix}-{self.run_id}-{pod.name}-{c['name']}"[:120]
            args = ["--pull", "never", "--label", self.label, "--name", name, "--hostname", pod.name[:63],
                    "--network", pod.network or self.network, "--ip", pod.ip]
            for k, v in pod.docker_labels.items():
                args += ["--label", f"{k}={v}"]
            for a in pod.aliases:
                args += ["--network-alias", a]
            args += self._security(pod, c, image_user)
            fs_group = (pod.spec.get("securityContext") or {}).get("fsGroup")
            args += self._volumes(pod, c, fs_group)
            env_file = os.path.join(self.scratch, f"{name}.env")
            with open(env_file, "w") as fh:
                for k, v in self._env(pod, c):
                    if "\n" in v:
                        raise KubeletError(f"pod {pod.name}: env {k} holds a newline; the stand-in cannot pass it")
                    fh.write(f"{k}={v}\n")
            os.chmod(env_file, 0o600)
            args += ["--env-file", env_file]
            limits = (c.get("resources") or {}).get("limits") or {}
            if "memory" in limits:
                args += ["--memory", memory(limits["memory"])]
            if "cpu" in limits:
                args += ["--cpus", str(cpu(limits["cpu"]))]
            if c.get("command"):
                args += ["--entrypoint", c["command"][0], image, *c["command"][1:], *(c.get("args") or [])]
            else:
                args += [image, *(c.get("args") or [])]
            pod.containers.append((c, name))
            if not detach:
                return docker("run", *args, check=False, timeout=int(pod.spec.get("activeDeadlineSeconds", 600)))
            pod.create_args[name] = args
            create_and_start(args, name, pod.extra_networks)
        return [n for _, n in pod.containers]

    # --- probes -------------------------------------------------------------------------
    def _probe_once(self, pod, c, name, probe):
        return probe_once(pod, c, name, probe)

    def running(self, name):
        return running(name)

    def wait_ready(self, pods):
        """Startup probe (if any), then readiness, for every container; each within its
        probe's failureThreshold x periodSeconds (as the kubelet's bounds)."""
        wait_ready([(pod, c, name) for pod in pods for c, name in pod.containers], self.say)

    def cleanup(self):
        ids = docker("ps", "-aq", "--filter", f"label={self.label}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
        if self.made_network:
            docker("network", "rm", self.network, check=False)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return len(ids)


def create_and_start(args, name, extra_networks=()):
    """`docker create` with `args`, connects it to each further (network, ip), starts it:
    Docker 20.10 takes one network at create, and a pod on several must have them all
    before its process starts."""
    docker("create", *args)
    for net, ip in extra_networks:
        docker("network", "connect", *(["--ip", ip] if ip else []), net, name)
    docker("start", name)


def probe_once(pod, c, name, probe):
    """One try of a probe against the container `name` of `pod` (container spec `c`)."""
    timeout = probe.get("timeoutSeconds", 1)
    # grpc: the kubelet asks grpc.health.v1.Health/Check; the stand-in only checks that
    # the port takes connections.
    if "tcpSocket" in probe or "grpc" in probe:
        port = pod.port(c, (probe.get("tcpSocket") or probe.get("grpc"))["port"])
        try:
            socket.create_connection((pod.ip, port), timeout=timeout).close()
            return True
        except OSError:
            return False
    if "httpGet" in probe:
        g = probe["httpGet"]
        if g.get("scheme", "HTTP") != "HTTP":
            raise KubeletError(f"pod {pod.name}: HTTPS probes are not supported by the stand-in")
        url = f"http://{pod.ip}:{pod.port(c, g['port'])}{g.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return 200 <= r.status < 400
        except OSError:
            return False
    if "exec" in probe:
        return docker("exec", name, *probe["exec"]["command"], check=False, timeout=timeout + 5).returncode == 0
    raise KubeletError(f"pod {pod.name}: unsupported probe {list(probe)}")


def running(name):
    p = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", name, check=False)
    return p.returncode == 0 and p.stdout.startswith("true")


def wait_ready(containers, say):
    """Startup probe (if any), then readiness, for each (pod, container spec, docker name);
    each within its probe's failureThreshold x periodSeconds (as the kubelet's bounds)."""
    pending = []
    for pod, c, name in containers:
        for kind in ("startupProbe", "readinessProbe"):
            if c.get(kind):
                pending.append((pod, c, name, kind, c[kind]))
    started = time.monotonic()
    deadlines = {}
    while pending:
        pod, c, name, kind, probe = pending[0]
        key = (name, kind)
        if key not in deadlines:
            deadlines[key] = time.monotonic() + probe.get("initialDelaySeconds", 0) + \
                probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10) + 5
        if not running(name):
            raise KubeletError(f"container {name} exited before its {kind} passed:\n{logs(name)}")
        if probe_once(pod, c, name, probe):
            say(f"{pod.name}: {kind} passed after {time.monotonic() - started:.0f} s")
            pending.pop(0)
            continue
        if time.monotonic() > deadlines[key]:
            raise KubeletError(f"{pod.name}: {kind} did not pass within its bounds:\n{logs(name)}")
        time.sleep(1)


def logs(name, tail=40):
    p = docker("logs", "--tail", str(tail), name, check=False)
    return "\n".join("    | " + line for line in (p.stdout + p.stderr).splitlines()[-tail:])


def memory(q):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([KMG]i?)?", str(q))
    if not m:
        raise KubeletError(f"memory quantity {q!r} not supported by the stand-in")
    return str(int(m.group(1)) * units.get(m.group(2) or "", 1))


def cpu(q):
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)
