#!/usr/bin/env python3
"""Generates deploy/seccomp/sandbox.json, the seccomp profile of every Souq sandbox.

The profile allows every x86_64 system call the kernel headers name, except the ones
listed in DENIED below (each with its reason), and refuses the rest with EPERM. clone
is allowed only without namespace flags, and clone3 answers ENOSYS so that libc falls
back to clone, whose flags seccomp can inspect. Only the x86_64 system call ABI is
allowed (see archMap). socket and socketpair are allowed only for
the address families not in DENIED_FAMILIES (see there). Run it again after changing
DENIED or DENIED_FAMILIES:

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

# Address families socket(2) and socketpair(2) refuse, by number, with EPERM like every
# other denied call. Docker's default profile refuses AF_VSOCK alone, and so does the
# reasoning here: a sandbox runs with NetworkMode none, in a network namespace of its own
# that holds only a loopback, and what matters is which families reach past it.
# - AF_VSOCK (40) is not namespaced: a vsock socket reaches the host's or hypervisor's
#   vsock services whatever the network namespace. Denied.
# - AF_ALG (38) reaches nothing outside, but it is the kernel crypto API, a large attack
#   surface with a history of privilege escalations that ordinary programs do not use
#   (OpenSSL, Go and Node hash in user space). Denied, like bpf or io_uring above.
# - Every other family either is namespaced (unix, inet, inet6, netlink, packet, key,
#   can, tipc, rds, smc, mctp, ...: each sees only the sandbox's own namespace; packet,
#   raw inet and xdp also need CAP_NET_RAW, which is dropped) or refuses sockets outside
#   the initial network namespace itself (bluetooth, nfc, x25, atm, ax25, appletalk,
#   ...: EAFNOSUPPORT). Allowed.
# Families from PF_MAX (46) on, which a later kernel might add, are refused.
DENIED_FAMILIES = {38: "AF_ALG", 40: "AF_VSOCK"}
AF_MAX = 46


def family_rules(names):
    """Rules allowing the calls `names` (socket, socketpair) for every family below AF_MAX but
    DENIED_FAMILIES. The family is an int, but seccomp sees the whole 64-bit register
    and the kernel only its low 32 bits, so every comparison must fail for a value with
    high bits set (as SCMP_CMP_NE 40 would not: 0x100000028 is not 40, yet the kernel
    reads 40). Hence an SCMP_CMP_LT for the run of allowed families from 0 and an
    SCMP_CMP_EQ for each one after it, never NE or GT. Separate rules, because runc ORs
    several comparisons of one argument instead of ANDing them."""
    first_denied = min(DENIED_FAMILIES)
    rules = [{"names": names, "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": first_denied, "op": "SCMP_CMP_LT"}]}]
    for family in range(first_denied, AF_MAX):
        if family not in DENIED_FAMILIES:
            rules.append({"names": names, "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": family, "op": "SCMP_CMP_EQ"}]})
    return rules


# clone flags that create namespaces: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
# NEWUSER | NEWPID | NEWNET | NEWTIME.
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080


def main():
    with open(HEADER) as f:
        names = sorted(set(re.findall(r"#define __NR_(\w+)\s+\d+", f.read())))
    denied = {n for group in DENIED.values() for n in group}
    special = {"clone", "clone3", "socket", "socketpair"}
    allowed = [n for n in names if n not in denied and n not in special]
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        # x86_64 alone: no i386 or x32 system call passes (the process dies of SIGSYS).
        # Every runtime is 64-bit, and i386's socketcall multiplexer keeps socket's
        # arguments in memory, where seccomp cannot read them: through `int 0x80`,
        # socketcall(SYS_SOCKET, {AF_VSOCK, ...}) would pass any family rule.
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            *family_rules(["socket", "socketpair"]),
        ],
    }
    with open(OUT, "w") as f:
        json.dump(profile, f, indent=1)
        f.write("\n")
    print(f"{OUT}: {len(allowed)} allowed, {len(denied & set(names))} denied of {len(names)} named")


if __name__ == "__main__":
    main()
