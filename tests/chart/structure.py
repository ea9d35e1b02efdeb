"""Structural assertions on one rendering of the chart: what Kubernetes' schemas cannot
see (references, selectors, ports, hooks, secrets) and what Souq's CLI expects."""
import base64
import re

import yaml

SECRET_ENV = {"SOUQ_DATABASE_URL", "SOUQ_REDIS_URL", "SOUQ_SMTP_URL", "SOUQ_JOIN_TOKEN", "SOUQ_ADMIN_TOKEN"}
# SOUQ_SMTP_URL is required unless mail goes to files (check_mail).
REQUIRED_ENV = {
    "control-plane": {"SOUQ_DATABASE_URL", "SOUQ_JOIN_TOKEN", "SOUQ_PUBLIC_URL", "SOUQ_SIGNING_KEY_FILE", "SOUQ_ADMIN_TOKEN"},
    "agent": {"SOUQ_JOIN_TOKEN", "SOUQ_CONTROL_PLANE_URL", "SOUQ_NODE_NAME", "SOUQ_DOCKER_HOST", "SOUQ_DATA_DIR"},
    "edge": {"SOUQ_JOIN_TOKEN", "SOUQ_CONTROL_PLANE_URL", "SOUQ_REDIS_URL"},
    "migrate": {"SOUQ_DATABASE_URL"},
}
LISTEN_ENV = {"SOUQ_GRPC_ADDR", "SOUQ_EDGE_ADDR", "SOUQ_AGENT_ADDR", "SOUQ_METRICS_ADDR"}
# Roles whose main port is gRPC behind mutual TLS: probed by gRPC health on the metrics port.
GRPC_HEALTH_ROLES = ("control-plane", "agent")
TLS_ENV = ("SOUQ_TLS_CERT", "SOUQ_TLS_KEY", "SOUQ_TLS_CA")
FILE_ENV = TLS_ENV + ("SOUQ_SIGNING_KEY_FILE", "SOUQ_EDGE_TLS_CERT", "SOUQ_EDGE_TLS_KEY")
WORKLOADS = ("Deployment", "DaemonSet", "Job", "Pod")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def pod_of(obj):
    """(pod spec, pod labels) of a workload."""
    if obj["kind"] == "Pod":
        return obj["spec"], obj["metadata"].get("labels", {})
    if obj["kind"] == "Job":
        t = obj["spec"]["template"]
        return t["spec"], t["metadata"].get("labels", {})
    t = obj["spec"]["template"]
    return t["spec"], t["metadata"]["labels"]


def hook(obj):
    a = obj["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in a:
        return None
    return {"events": set(a["helm.sh/hook"].split(",")), "weight": int(a.get("helm.sh/hook-weight", "0")),
            "delete": set(a.get("helm.sh/hook-delete-policy", "").split(","))}


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def existing_names(values):
    """Secret names the operator gives in values: every existingSecret(s), pull secrets,
    the edge's HTTPS Secret and the Ingress TLS Secrets."""
    names = set()

    def walk(v, key=""):
        if isinstance(v, dict):
            for k, x in v.items():
                # Every value under existingSecrets names a Secret.
                walk(x, key if key == "existingSecrets" else k)
        elif isinstance(v, list):
            for x in v:
                walk(x, key)
        elif key in ("existingSecret", "existingSecrets", "secretName") and isinstance(v, str) and v:
            names.add(v)

    walk(values)
    names |= {p["name"] for p in values.get("imagePullSecrets", [])}
    return names


def refs_of(spec):
    """(kind, name, key or None) of every Secret and ConfigMap a pod spec reads."""
    out = []
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        for e in c.get("env", []):
            vf = e.get("valueFrom", {})
            if "secretKeyRef" in vf:
                out.append(("Secret", vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"]))
            if "configMapKeyRef" in vf:
                out.append(("ConfigMap", vf["configMapKeyRef"]["name"], vf["configMapKeyRef"]["key"]))
        for ef in c.get("envFrom", []):
            if "secretRef" in ef:
                out.append(("Secret", ef["secretRef"]["name"], None))
            if "configMapRef" in ef:
                out.append(("ConfigMap", ef["configMapRef"]["name"], None))
    for v in spec.get("volumes", []):
        if "secret" in v:
            items = v["secret"].get("items") or [{"key": None}]
            out += [("Secret", v["secret"]["secretName"], i["key"]) for i in items]
        if "configMap" in v:
            items = v["configMap"].get("items") or [{"key": None}]
            out += [("ConfigMap", v["configMap"]["name"], i["key"]) for i in items]
        for src in v.get("projected", {}).get("sources", []):
            for kind, field in (("Secret", "secret"), ("ConfigMap", "configMap")):
                if field in src:
                    items = src[field].get("items") or [{"key": None}]
                    out += [(kind, src[field]["name"], i["key"]) for i in items]
    out += [("Secret", p["name"], None) for p in spec.get("imagePullSecrets", [])]
    return out


def file_reachable(spec, container, path):
    """Whether `path` is a file a volume mount provides (one of its items when listed)."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        root = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(root):
            continue
        v = volumes.get(m["name"], {})
        src = v.get("secret") or v.get("configMap")
        if src and src.get("items"):
            return path[len(root):] in {i["path"] for i in src["items"]}
        return bool(v)
    return False


def check_all(check, objects, notes, manifests, values, roles, release):
    objs = [o for _, o in objects]
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    named = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    workloads = [o for o in objs if o["kind"] in WORKLOADS]
    existing = existing_names(values)

    for path, text in manifests.items():
        check("<no value>" not in text, f"{path} renders '<no value>' (a value the template reads is missing)")
    for o in objs:
        n = o["metadata"]["name"]
        limit = 63 if o["kind"] in ("Service", "DaemonSet", "Deployment", "Job") else 253
        pattern = DNS_LABEL if o["kind"] == "Service" else DNS_SUBDOMAIN
        check(len(n) <= limit and pattern.match(n), f"{o['kind']} name {n!r} is not a valid name")

    check_workloads(check, workloads, values, roles, named, by_kind)
    check_references(check, workloads, by_kind, named, existing)
    check_secrets(check, objs, notes, values)
    check_hooks(check, by_kind, named)
    check_selectors(check, by_kind, workloads, named)
    check_notes(check, notes, by_kind, release)


def check_workloads(check, workloads, values, roles, named, by_kind):
    image = values["image"]["repository"]
    for o in workloads:
        spec, _ = pod_of(o)
        long_running = o["kind"] in ("Deployment", "DaemonSet")
        for c in spec["containers"]:
            where = f"{o['kind']}/{o['metadata']['name']}/{c['name']}"
            env = env_of(c)
            ports = c.get("ports", [])
            names = {p["name"]: p["containerPort"] for p in ports if "name" in p}
            numbers = {p["containerPort"] for p in ports}
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(kind)
                if long_running:
                    check(probe is not None, f"{where} has no {kind}")
                if not probe:
                    continue
                handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc") or {}
                port = handler.get("port")
                ok = port in names if isinstance(port, str) else port in numbers
                check(ok, f"{where} {kind} port {port!r} is not a declared container port")
            for name in LISTEN_ENV & env.keys():
                port = int(env[name]["value"].rsplit(":", 1)[1])
                check(port in numbers, f"{where} listens on {port} ({name}) but declares ports {sorted(numbers)}")
            if not c["image"].startswith(image + ":"):
                continue
            args = c.get("args") or []
            role = args[0] if args else None
            check(role in REQUIRED_ENV, f"{where} runs souq with args {args!r}: not a role")
            if role not in REQUIRED_ENV:
                continue
            for name in env:
                if name.startswith("SOUQ_"):
                    check(roles.accepts(role, name), f"{where}: souq {role} has no env twin {name}")
            missing = REQUIRED_ENV[role] - env.keys()
            check(not missing, f"{where}: souq {role} needs {sorted(missing)}")
            if role != "migrate":
                check_telemetry(check, where, role, c, env, values)
                tls = [n for n in TLS_ENV if n in env]
                insecure = env.get("SOUQ_INSECURE_GRPC", {}).get("value") == "true"
                check((len(tls) == 3) != insecure, f"{where}: needs all of {TLS_ENV} or SOUQ_INSECURE_GRPC=true")
            for name in FILE_ENV:
                if name in env:
                    check(file_reachable(spec, c, env[name]["value"]), f"{where}: {name}={env[name]['value']} is not a mounted file")
            if "SOUQ_DATA_DIR" in env:
                d = env["SOUQ_DATA_DIR"]["value"]
                check(any(m["mountPath"] == d for m in c.get("volumeMounts", [])), f"{where}: data dir {d} is not a volume")
            if "SOUQ_CONTROL_PLANE_URL" in env:
                m = re.match(r"^https?://([^:/]+):(\d+)$", env["SOUQ_CONTROL_PLANE_URL"]["value"])
                svc = named.get(("Service", m.group(1))) if m else None
                check(svc and any(p["port"] == int(m.group(2)) for p in svc["spec"]["ports"]),
                      f"{where}: SOUQ_CONTROL_PLANE_URL is not a rendered Service and port")
            sc = {**(spec.get("securityContext") or {}), **(c.get("securityContext") or {})}
            if role != "agent":
                check(sc.get("runAsNonRoot") is True, f"{where}: runs as root")
            check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allows privilege escalation")
        if o["kind"] == "DaemonSet":
            check_agent(check, o, values)
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-control-plane"):
            check_control_plane(check, o, values)
    for sa in by_kind.get("ServiceAccount", []):
        check(sa.get("automountServiceAccountToken") is False, f"ServiceAccount {sa['metadata']['name']} mounts a token")
    for kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
        check(kind not in by_kind, f"a {kind} is rendered: no Souq role needs the API")


def check_telemetry(check, where, role, c, env, values):
    """Every long-running role serves metrics on metrics.port, declared as the container
    port `metrics`, exports traces as telemetry says, and the gRPC roles are probed by
    gRPC health on that port (the edge keeps its HTTP probes)."""
    port = values["metrics"]["port"]
    addr = env.get("SOUQ_METRICS_ADDR", {}).get("value")
    check(addr == f"0.0.0.0:{port}", f"{where}: SOUQ_METRICS_ADDR is {addr!r}, not 0.0.0.0:{port}")
    declared = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    check(declared.get("metrics") == port, f"{where}: no container port `metrics` {port}: {declared}")
    otlp = values["telemetry"]["otlpEndpoint"]
    got = env.get("SOUQ_OTLP_ENDPOINT", {}).get("value", "")
    check(got == otlp, f"{where}: SOUQ_OTLP_ENDPOINT is {got!r}, not telemetry.otlpEndpoint {otlp!r}")
    ratio = env.get("SOUQ_TRACE_SAMPLE_RATIO", {}).get("value")
    check(ratio is not None and float(ratio) == float(values["telemetry"]["traceSampleRatio"]),
          f"{where}: SOUQ_TRACE_SAMPLE_RATIO is {ratio!r}, not telemetry.traceSampleRatio")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(kind) or {}
        if role in GRPC_HEALTH_ROLES:
            check(probe.get("grpc", {}).get("port") == port, f"{where}: {kind} is not gRPC health on the metrics port: {probe}")
        else:
            check("httpGet" in probe, f"{where}: {kind} is not an HTTP probe: {probe}")


def check_control_plane(check, dep, values):
    """Replicas as asked; a rollout that never leaves edges and agents without a control
    plane (a lease elects the one reconciler, so old and new pods may overlap); mail to
    SMTP or to the mail.dir hostPath, never both, never neither."""
    spec, _ = pod_of(dep)
    want = values["controlPlane"]["replicas"]
    check(dep["spec"].get("replicas", 1) == want, f"the control plane runs {dep['spec'].get('replicas')} replicas, not {want}")
    strategy = dep["spec"].get("strategy", {})
    check(strategy.get("type") == "RollingUpdate" and strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0,
          f"the control plane's rollout may leave no control plane up: {strategy}")
    c = spec["containers"][0]
    env = env_of(c)
    data = env.get("SOUQ_DATA_DIR", {}).get("value", "?").rstrip("/")
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mail = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == f"{data}/mail"]
    mail_dir = values.get("mail", {}).get("dir", "")
    if "SOUQ_SMTP_URL" in env:
        check(not mail, "the control plane has SMTP and also a mail directory")
    else:
        hp = vols.get(mail[0]["name"], {}).get("hostPath", {}) if mail else {}
        check(bool(mail_dir) and hp.get("path") == mail_dir,
              f"the control plane has no SMTP and no hostPath {mail_dir or '(mail.dir unset)'} at {data}/mail")


def check_agent(check, ds, values):
    spec, _ = pod_of(ds)
    vols = {v["name"]: v for v in spec["volumes"]}
    c = spec["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    env = env_of(c)
    where = f"DaemonSet/{ds['metadata']['name']}"
    socket = [n for n, v in vols.items() if v.get("hostPath", {}).get("type") == "Socket"]
    check(len(socket) == 1, f"{where}: no hostPath of type Socket")
    if socket:
        hp = vols[socket[0]]["hostPath"]["path"]
        check(hp == values["agent"]["docker"]["socketPath"], f"{where}: socket hostPath {hp} is not agent.docker.socketPath")
        inside = mounts.get(socket[0])
        check(inside and env.get("SOUQ_DOCKER_HOST", {}).get("value") == f"unix://{inside}",
              f"{where}: SOUQ_DOCKER_HOST does not name the mounted socket {inside}")
    channels = env.get("SOUQ_DATA_DIR", {}).get("value", "?").rstrip("/") + "/channels"
    same = [n for n, v in vols.items() if v.get("hostPath", {}).get("path") == channels and mounts.get(n) == channels]
    check(same, f"{where}: the channel dir {channels} is not a hostPath at the same path inside and outside")
    node = env.get("SOUQ_NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    check(node == "spec.nodeName", f"{where}: SOUQ_NODE_NAME is not the node's name")
    region = env.get("SOUQ_REGION", {}).get("value")
    label = values["agent"]["regionFromNodeLabel"]["label"]
    if label:
        check(spec.get("nodeSelector", {}).get(label) == region, f"{where}: region {region} is not its nodes' {label}")
    else:
        check(region == values["agent"]["region"], f"{where}: SOUQ_REGION is not agent.region")


def check_references(check, workloads, by_kind, named, existing):
    for o in workloads:
        spec, _ = pod_of(o)
        h = hook(o)
        where = f"{o['kind']}/{o['metadata']['name']}"
        for kind, name, key in refs_of(spec):
            target = named.get((kind, name))
            if target is None:
                check(name in existing, f"{where} reads {kind} {name!r}: neither rendered nor named by an existingSecret value")
                continue
            data = {**(target.get("data") or {}), **(target.get("stringData") or {})}
            check(key is None or key in data, f"{where} reads key {key!r} that {kind} {name} does not hold")
            if h and "test" not in h["events"]:
                th = hook(target)
                check(th and h["events"] <= th["events"] and th["weight"] < h["weight"],
                      f"hook {where} reads {kind} {name}, which does not exist before it (not an earlier hook)")
        sa = spec.get("serviceAccountName")
        if h and sa:
            t = named.get(("ServiceAccount", sa))
            check(t is None or hook(t), f"hook {where} uses ServiceAccount {sa}, created only after the hooks")
    for ing in by_kind.get("Ingress", []):
        for t in ing["spec"].get("tls", []):
            check(("Secret", t["secretName"]) in named or t["secretName"] in existing,
                  f"Ingress TLS Secret {t['secretName']} is neither rendered nor named in values")


def check_secrets(check, objs, notes, values):
    """Secrets appear only in Secrets: never in an env value, a ConfigMap or the notes."""
    secrets = set()
    for s in [o for o in objs if o["kind"] == "Secret"]:
        for v in (s.get("data") or {}).values():
            text = base64.b64decode(v).decode(errors="replace")
            secrets |= {line for line in text.splitlines() if len(line) >= 12 and "CERTIFICATE" not in line}
    for k in ("database", "redis", "smtp"):
        if values["secrets"][k]["url"]:
            secrets.add(values["secrets"][k]["url"])
    for o in objs:
        if o["kind"] == "Secret":
            continue
        text = yaml.safe_dump(o)
        leaked = [s[:6] + "…" for s in secrets if s in text]
        check(not leaked, f"{o['kind']}/{o['metadata']['name']} holds secret material {leaked}")
        if o["kind"] in WORKLOADS:
            spec, _ = pod_of(o)
            for c in spec["containers"]:
                for e in c.get("env", []):
                    if e["name"] in SECRET_ENV:
                        check("secretKeyRef" in e.get("valueFrom", {}) and "value" not in e,
                              f"{o['kind']}/{o['metadata']['name']}: {e['name']} is not from a secretKeyRef")
    check(not [s for s in secrets if s in (notes or "")], "NOTES.txt shows secret material")


def check_hooks(check, by_kind, named):
    jobs = by_kind.get("Job", [])
    migrate = [j for j in jobs if pod_of(j)[0]["containers"][0].get("args") == ["migrate"]]
    check(len(migrate) == 1, f"expected one migration Job, got {len(migrate)}")
    for j in migrate:
        h = hook(j)
        check(h and h["events"] == {"pre-install", "pre-upgrade"}, f"migration Job hook is {h and h['events']}")
        check(h and {"before-hook-creation", "hook-succeeded"} <= h["delete"], f"migration Job delete policy is {h and h['delete']}")
        check(pod_of(j)[0].get("restartPolicy") in ("Never", "OnFailure"), "migration Job restarts forever")
    for p in by_kind.get("Pod", []):
        h = hook(p)
        check(h and h["events"] == {"test"}, f"Pod {p['metadata']['name']} is not a `helm test` hook")
        args = " ".join(p["spec"]["containers"][0].get("command", []) + p["spec"]["containers"][0].get("args", []))
        m = re.search(r"https?://([^:/]+):(\d+)/readyz", args)
        svc = named.get(("Service", m.group(1))) if m else None
        check(svc and any(pt["port"] == int(m.group(2)) for pt in svc["spec"]["ports"]),
              "the test pod does not call /readyz on a rendered Service port")


def check_selectors(check, by_kind, workloads, named):
    pods = [(o, *pod_of(o)) for o in workloads if not hook(o)]
    for o in by_kind.get("Deployment", []) + by_kind.get("DaemonSet", []):
        sel = o["spec"]["selector"]["matchLabels"]
        _, labels = pod_of(o)
        check(matches(sel, labels), f"{o['kind']}/{o['metadata']['name']} selector {sel} does not match its pods {labels}")
        others = [x["metadata"]["name"] for x, _, lab in pods if x is not o and matches(sel, lab)]
        check(not others, f"{o['kind']}/{o['metadata']['name']} selector also matches {others}")

    def selected(sel):
        return [(x, spec) for x, spec, lab in pods if matches(sel, lab)]

    def port_names(chosen):
        return {p.get("name") for _, spec in chosen for c in spec["containers"] for p in c.get("ports", [])}

    for s in by_kind.get("Service", []):
        chosen = selected(s["spec"].get("selector", {}))
        check(chosen, f"Service/{s['metadata']['name']} selects no pods")
        kinds = {x["metadata"]["name"] for x, _ in chosen}
        check(len(kinds) == 1, f"Service/{s['metadata']['name']} selects pods of {sorted(kinds)}")
        for p in s["spec"]["ports"]:
            t = p.get("targetPort", p["port"])
            check(not isinstance(t, str) or t in port_names(chosen), f"Service/{s['metadata']['name']} targetPort {t} is not declared")
    for p in by_kind.get("PodDisruptionBudget", []):
        check(selected(p["spec"]["selector"]["matchLabels"]), f"PDB/{p['metadata']['name']} selects no pods")
    for n in by_kind.get("NetworkPolicy", []):
        chosen = selected(n["spec"]["podSelector"].get("matchLabels", {}))
        check(chosen, f"NetworkPolicy/{n['metadata']['name']} selects no pods")
        for rule in n["spec"].get("ingress", []):
            for f in rule.get("from", []):
                if "podSelector" in f:
                    check(selected(f["podSelector"]["matchLabels"]), f"NetworkPolicy/{n['metadata']['name']} allows no pods")
            for pt in rule.get("ports", []):
                check(not isinstance(pt["port"], str) or pt["port"] in port_names(chosen),
                      f"NetworkPolicy/{n['metadata']['name']} port {pt['port']} is not declared")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        target = named.get((ref["kind"], ref["name"]))
        check(target is not None, f"HPA/{h['metadata']['name']} scales a missing {ref['kind']}")
        check(target is None or "replicas" not in target["spec"], "the HPA's Deployment also sets replicas")
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                b = p["backend"]["service"]
                svc = named.get(("Service", b["name"]))
                check(svc and b["port"].get("name") in {x["name"] for x in svc["spec"]["ports"]},
                      f"Ingress/{ing['metadata']['name']} routes to a missing Service port {b}")
    long_running = by_kind.get("Deployment", []) + by_kind.get("DaemonSet", [])
    for sm in by_kind.get("ServiceMonitor", []):
        where = f"ServiceMonitor/{sm['metadata']['name']}"
        svcs = [s for s in by_kind.get("Service", []) if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        check(svcs, f"{where} selects no Services")
        for e in sm["spec"]["endpoints"]:
            for s in svcs:
                check(any(e["port"] == p["name"] for p in s["spec"]["ports"]),
                      f"{where} scrapes port {e['port']}, which Service/{s['metadata']['name']} does not have")
        # Every long-running workload is scraped: some selected Service picks its pods.
        for o in long_running:
            _, labels = pod_of(o)
            check(any(matches(s["spec"].get("selector", {}), labels) for s in svcs),
                  f"{where} scrapes no Service of {o['kind']}/{o['metadata']['name']}")


def check_notes(check, notes, by_kind, release):
    check(bool(notes and notes.strip()), "NOTES.txt renders empty")
    if not notes:
        return
    edge = [s["metadata"]["name"] for s in by_kind.get("Service", []) if s["metadata"]["name"].endswith("-edge")]
    check(edge and edge[0] in notes or "://" in notes, "NOTES.txt does not say how to reach the edge")
    check("registered" in notes and f"app.kubernetes.io/instance={release}" in notes,
          "NOTES.txt does not say how to check that agents registered")
    check("/api/v1/admin/" in notes and "get secret" in notes and "base64 -d" in notes,
          "NOTES.txt does not say how to read the admin token")
