"""The env twins each `souq` role accepts: from `souq <role> --help` when a binary is at
hand (SOUQ_BIN), else every `env = "SOUQ_..."` in cli/src (any role's, a weaker check)."""
import os
import pathlib
import re
import subprocess

ROLES = ("control-plane", "agent", "edge", "migrate")
# Read by the process itself rather than by clap (cli/src/telemetry.rs).
PROCESS_ENV = {"SOUQ_LOG", "SOUQ_LOG_FORMAT"}


class Roles:
    """`env[role]`: the SOUQ_* names that role reads; `source`: where they came from."""

    def __init__(self, env, source):
        self.env = env
        self.source = source

    def accepts(self, role, name):
        return role in self.env and (name in self.env[role] or name in PROCESS_ENV)


def roles(root):
    binary = os.environ.get("SOUQ_BIN")
    if binary and os.access(binary, os.X_OK):
        env = {}
        for role in ROLES:
            out = subprocess.run([binary, role, "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
            env[role] = set(re.findall(r"\[env: (SOUQ_[A-Z0-9_]+)", out))
        return Roles(env, f"`{binary} <role> --help`")
    names = set()
    for f in pathlib.Path(root, "cli/src").rglob("*.rs"):
        names |= set(re.findall(r'env\s*=\s*"(SOUQ_[A-Z0-9_]+)"', f.read_text()))
    return Roles({role: names for role in ROLES}, "cli/src (no SOUQ_BIN: any role's names)")
