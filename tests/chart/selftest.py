"""Proves the structural assertions are not vacuous: each deliberate break of a rendered
chart (a wrong env name, a missing mount, a wrong port, ...) must be reported."""
import copy

import structure


def _container(objects, kind, suffix):
    for _, o in objects:
        if o["kind"] == kind and o["metadata"]["name"].endswith(suffix):
            return structure.pod_of(o)[0]["containers"][0], o
    raise KeyError(f"{kind} *{suffix}")


def _env(c, name):
    return next(e for e in c["env"] if e["name"] == name)


def _rename_env(objs):
    _env(_container(objs, "Deployment", "-edge")[0], "SOUQ_EDGE_ADDR")["name"] = "SOUQ_EDGE_ADDRESS"


def _drop_mount(objs):
    c = _container(objs, "Deployment", "-control-plane")[0]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "signing-key"]


def _wrong_port(objs):
    _env(_container(objs, "Deployment", "-edge")[0], "SOUQ_EDGE_ADDR")["value"] = "0.0.0.0:8081"


def _probe_port(objs):
    _container(objs, "DaemonSet", "-agent")[0]["readinessProbe"]["grpc"]["port"] = 9465


def _tcp_probe(objs):
    _container(objs, "Deployment", "-control-plane")[0]["livenessProbe"] = {"tcpSocket": {"port": "grpc"}}


def _metrics_port(objs):
    c = _container(objs, "Deployment", "-edge")[0]
    c["ports"] = [p for p in c["ports"] if p.get("name") != "metrics"]


def _socket_type(objs):
    spec = structure.pod_of(_container(objs, "DaemonSet", "-agent")[1])[0]
    next(v for v in spec["volumes"] if v["name"] == "docker-socket")["hostPath"]["type"] = "File"


def _channels_path(objs):
    c = _container(objs, "DaemonSet", "-agent")[0]
    next(m for m in c["volumeMounts"] if m["name"] == "channels")["mountPath"] = "/channels"


def _token_in_value(objs):
    e = _env(_container(objs, "Deployment", "-edge")[0], "SOUQ_JOIN_TOKEN")
    e.pop("valueFrom")
    e["value"] = "0123456789abcdef0123456789"


def _missing_secret(objs):
    c = _container(objs, "Deployment", "-edge")[0]
    _env(c, "SOUQ_REDIS_URL")["valueFrom"]["secretKeyRef"]["name"] = "nobody-made-this"


def _selector(objs):
    o = _container(objs, "Deployment", "-edge")[1]
    o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "edges"


def _admin_token_in_value(objs):
    e = _env(_container(objs, "Deployment", "-control-plane")[0], "SOUQ_ADMIN_TOKEN")
    e.pop("valueFrom")
    e["value"] = "0123456789abcdef0123456789abcdef"


def _recreate(objs):
    _container(objs, "Deployment", "-control-plane")[1]["spec"]["strategy"] = {"type": "Recreate"}


def _no_smtp(objs):
    c = _container(objs, "Deployment", "-control-plane")[0]
    c["env"] = [e for e in c["env"] if e["name"] != "SOUQ_SMTP_URL"]


def _hook_policy(objs):
    o = _container(objs, "Job", "-migrate")[1]
    o["metadata"]["annotations"]["helm.sh/hook-delete-policy"] = "before-hook-creation"


BREAKS = [
    ("an env name the CLI does not know", _rename_env),
    ("the signing key's mount removed", _drop_mount),
    ("the edge listening on an undeclared port", _wrong_port),
    ("a probe on an undeclared port", _probe_port),
    ("the control plane probed on its TLS port, not by gRPC health", _tcp_probe),
    ("the edge's metrics port undeclared", _metrics_port),
    ("the Docker socket hostPath not of type Socket", _socket_type),
    ("the channel dir at another path inside", _channels_path),
    ("the join token in an env value", _token_in_value),
    ("a Secret nobody renders or names", _missing_secret),
    ("a selector that misses its pods", _selector),
    ("the migration hook kept after success", _hook_policy),
    ("the admin token in an env value", _admin_token_in_value),
    ("the control plane's rollout stopping every replica first", _recreate),
    ("no SMTP and no mail directory", _no_smtp),
]


def run(check, objects, notes, manifests, values, roles, release):
    for what, brk in BREAKS:
        broken = copy.deepcopy(objects)
        brk(broken)
        found = []
        structure.check_all(lambda ok, msg: found.append(msg) if not ok else None,
                            broken, notes, manifests, values, roles, release)
        check(bool(found), f"breaking the chart ({what}) went unnoticed")
