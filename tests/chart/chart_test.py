"""Offline tests of the Helm chart deploy/helm/souq: strict lint, refused values, strict
validation of every rendered object against Kubernetes 1.28-1.33, and structural
assertions. Run through scripts/test-chart.sh, which provides the pinned packages."""
import logging
import os
import pathlib
import re
import sys
import time

import helm_python as helm
import kubernetes_validate as kv
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import cli_env  # noqa: E402
import selftest  # noqa: E402
import souq_tls  # noqa: E402
import structure  # noqa: E402

KUBE_VERSIONS = ["1.28.0", "1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
# Kinds with no schema in kubernetes-validate, allowed by name: CRDs only.
CRD_ALLOWLIST = {("monitoring.coreos.com/v1", "ServiceMonitor")}
RELEASE, NAMESPACE = "rel", "souq"

# Values the schema or the templates must refuse, with what the message must name.
REFUSED = [
    ("a string replica count", {"controlPlane": {"replicas": "1"}}, "/controlPlane/replicas"),
    ("a negative control plane count", {"controlPlane": {"replicas": -1}}, "/controlPlane/replicas"),
    ("no SMTP and no mail directory", {"secrets": {"smtp": {"existingSecret": ""}}}, "secrets.smtp"),
    ("a mail directory beside SMTP", {"mail": {"dir": "/var/lib/souq-mail"}}, "mail.dir"),
    ("a relative mail directory", {"mail": {"dir": "mail"}}, "/mail/dir"),
    ("an unknown key in the admin token", {"secrets": {"adminToken": {"value": "x" * 40}}}, "value"),
    ("an unknown top-level key", {"replicaCount": 3}, "replicaCount"),
    ("an unknown key in a component", {"edge": {"replicaCount": 3}}, "replicaCount"),
    ("an unknown probe setting", {"agent": {"probes": {"liveness": {"port": 1}}}}, "port"),
    ("a missing database secret reference", {"secrets": {"database": {"existingSecret": ""}}}, "/secrets/database"),
    ("a missing Redis secret reference", {"secrets": {"redis": {"existingSecret": "", "url": ""}}}, "/secrets/redis"),
    ("both a database URL and an existingSecret",
     {"secrets": {"database": {"url": "postgres://db/souq"}}}, "secrets.database"),
    ("SQLite on Kubernetes", {"secrets": {"database": {"existingSecret": "", "url": "sqlite:///data/souq.db"}}},
     "/secrets/database/url"),
    ("part of the internal TLS Secrets", {"internalTls": {"existingSecrets": {"agent": "mine"}}}, "internalTls.existingSecrets"),
    ("edge HTTPS without its Secret", {"edge": {"tls": {"enabled": True}}}, "/edge/tls/existingSecret"),
    ("a relative agent data dir", {"agent": {"dataDir": "var/lib/souq"}}, "/agent/dataDir"),
    ("an agent data dir past the channel path limit", {"agent": {"dataDir": "/" + "d" * 80}}, "/agent/dataDir"),
    ("a bad region", {"agent": {"region": "eu west"}}, "/agent/region"),
    ("a bad trusted proxy", {"edge": {"trustedProxies": ["proxy.example.com"]}}, "/edge/trustedProxies/0"),
    ("both PDB bounds", {"edge": {"pdb": {"maxUnavailable": 1}}}, "edge.pdb"),
    ("an Ingress without hosts", {"edge": {"ingress": {"enabled": True}}}, "/edge/ingress/hosts"),
    ("a privileged port", {"edge": {"port": 80}}, "/edge/port"),
    ("a bad pull policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("the metrics port on the edge's port", {"metrics": {"port": 8080}}, "metrics.port"),
    ("a privileged metrics port", {"metrics": {"port": 443}}, "/metrics/port"),
    ("a sample ratio above 1", {"telemetry": {"traceSampleRatio": 1.5}}, "/telemetry/traceSampleRatio"),
    ("an OTLP endpoint without a scheme", {"telemetry": {"otlpEndpoint": "collector:4317"}}, "/telemetry/otlpEndpoint"),
    ("a region label without values", {"agent": {"regionFromNodeLabel": {"label": "topology.kubernetes.io/region"}}},
     "/agent/regionFromNodeLabel/values"),
]


class Run:
    """Counts checks and collects failures; every failure is printed as it happens."""

    def __init__(self):
        self.checks = 0
        self.failures = []
        self.sections = {}

    def check(self, section, ok, what):
        self.checks += 1
        self.sections.setdefault(section, [0, 0])[0] += 1
        if not ok:
            self.sections[section][1] += 1
            self.failures.append(f"[{section}] {what}")
            print(f"FAIL [{section}] {what}", flush=True)


def value_sets(chart_dir):
    """The default values and each ci/*.yaml file, by name."""
    sets = [("defaults", {})]
    for f in sorted((chart_dir / "ci").glob("*.yaml")):
        sets.append((f"ci/{f.name}", yaml.safe_load(f.read_text()) or {}))
    return sets


def lint(run, chart_dir, sets):
    for name, values in sets:
        for v in KUBE_VERSIONS:
            report = helm.lint(str(chart_dir), values, strict=True, kube_version=f"v{v}")
            bad = [m for m in report["messages"] if m["severity"] >= 2] + [{"path": "", "error": e} for e in report["errors"]]
            run.check("lint", not bad, f"{name} on {v}: {bad}")


def refused(run, chart):
    for what, values, names in REFUSED:
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
        except (helm.HelmValuesError, helm.HelmRenderError) as e:
            run.check("refused", names in str(e), f"{what}: refused, but the message does not name {names!r}: {e}")
            continue
        run.check("refused", False, f"{what}: rendered, should be refused")


def render(chart, values):
    """The rendered objects (template path, object) and the NOTES.txt text."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects, notes = [], None
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append((path, doc))
    return objects, notes, manifests


def validate(run, name, objects):
    for path, obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        for v in KUBE_VERSIONS:
            label = f"{name}: {path} {obj.get('kind')}/{obj.get('metadata', {}).get('name')} on {v}"
            try:
                kv.validate(obj, v, strict=True)
                run.check("validate", True, label)
            except kv.SchemaNotFoundError as e:
                run.check("validate", key in CRD_ALLOWLIST, f"{label}: {e.message}")
            except kv.ValidationError as e:
                where = "/".join(str(p) for p in e.absolute_path)
                run.check("validate", False, f"{label}: at {where}: {e.message}")


def main():
    # Helm logs each refused value's `fail` at INFO on stderr; only errors are news here.
    helm.enable_logging(logging.ERROR)
    root = pathlib.Path(sys.argv[1]).resolve()
    chart_dir = root / "deploy/helm/souq"
    run = Run()
    started = time.monotonic()
    sets = value_sets(chart_dir)
    lint(run, chart_dir, sets)
    roles = cli_env.roles(root)
    with helm.Chart.load(str(chart_dir)) as chart:
        refused(run, chart)
        workspace = re.search(r'\[workspace\.package\][^\[]*?version\s*=\s*"([^"]+)"',
                              (root / "Cargo.toml").read_text(), re.S).group(1)
        run.check("structure", chart.metadata.get("appVersion") == workspace,
                  f"Chart.yaml appVersion {chart.metadata.get('appVersion')!r} is not the workspace version {workspace!r}")
        rendered = {}
        for name, values in sets:
            try:
                merged = chart.merge_values(values)
                objects, notes, manifests = render(chart, values)
            except helm.HelmError as e:
                run.check("render", False, f"{name}: {e}")
                continue
            rendered[name] = (objects, notes, manifests, merged)
            validate(run, name, objects)
            structure.check_all(lambda ok, what: run.check("structure", ok, f"{name}: {what}"),
                                objects, notes, manifests, merged, roles, RELEASE)
    if "ci/minimal-values.yaml" not in rendered or "defaults" not in rendered:
        run.check("self-test", False, "the defaults and ci/minimal-values.yaml must render")
    else:
        selftest.run(lambda ok, what: run.check("self-test", ok, what), *rendered["ci/minimal-values.yaml"], roles, RELEASE)
    binary = os.environ.get("SOUQ_BIN")
    if binary and "defaults" in rendered:
        souq_tls.check(lambda ok, what: run.check("souq-tls", ok, what), rendered["defaults"][0], binary, f"{RELEASE}-souq")
    else:
        print("souq-tls: skipped (no SOUQ_BIN): the generated certificates were not tried with souq")
    took = time.monotonic() - started
    print(f"\nchart tests: {len(sets)} value sets ({', '.join(n for n, _ in sets)}), Kubernetes "
          f"{KUBE_VERSIONS[0]}-{KUBE_VERSIONS[-1]}, CLI env from {roles.source}")
    for section, (n, bad) in run.sections.items():
        print(f"  {section:10} {n - bad}/{n} passed")
    print(f"  {len(run.failures)} failure(s) in {took:.1f} s")
    if run.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
