#!/usr/bin/env python3
"""Generates deploy/seccomp/sandbox.json, the seccomp profile of every Souq sandbox.

The profile allows every x86_64 system call the kernel headers name, except the ones
listed in DENIED below (each with its reason), and refuses the rest with EPERM. clone
is allowed only without namespace flags, and clone3 answers ENOSYS so that libc falls
back to clone, whose flags seccomp can inspect. Run it again after changing DENIED:

    python3 deploy/seccomp/generate.py [/usr/include/x86_64-linux-gnu/asm/unistd_64.h]

(the header comes with Debian's linux-libc-dev).
"""
import json
import os
import re
import sys

HEADER = sys.argv[1] if len(sys.argv) > 1 else "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox.json")

# Denied, by reason. A sandbox runs ordinary programs; none of these is needed by one.
DENIED = {
    # Tracing and reading other processes: even within one sandbox, no run may
    # inspect or steer the shim or PID 1.
    "tracing": ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"],
    # Namespaces, mounts and root changes: the way out of a container.
    "namespaces and mounts": [
        "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree",
        "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    ],
    # The kernel itself: modules, kexec, reboot, swap, accounting, quotas.
    "kernel administration": [
        "init_module", "finit_module", "delete_module", "create_module", "kexec_load",
        "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl",
        "quotactl_fd", "syslog", "vhangup", "nfsservctl", "uselib", "sysfs", "ustat",
        "_sysctl", "lookup_dcookie", "get_kernel_syms", "query_module",
    ],
    # Clocks are the host's.
    "time": ["settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime"],
    # Large kernel attack surfaces that ordinary programs do not use.
    "attack surface": [
        "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "keyctl", "add_key", "request_key", "open_by_handle_at",
        "name_to_handle_at", "personality", "fanotify_init", "iopl", "ioperm",
        "modify_ldt", "vm86", "vm86old", "mbind", "set_mempolicy", "move_pages",
        "migrate_pages", "set_mempolicy_home_node",
    ],
}

# clone flags that create namespaces: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
# NEWUSER | NEWPID | NEWNET | NEWTIME.
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080


def main():
    with open(HEADER) as f:
        names = sorted(set(re.findall(r"#define __NR_(\w+)\s+\d+", f.read())))
    denied = {n for group in DENIED.values() for n in group}
    special = {"clone", "clone3"}
    allowed = [n for n in names if n not in denied and n not in special]
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        ],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    }
    with open(OUT, "w") as f:
        json.dump(profile, f, indent=1)
        f.write("\n")
    print(f"{OUT}: {len(allowed)} allowed, {len(denied & set(names))} denied of {len(names)} named")


if __name__ == "__main__":
    main()
