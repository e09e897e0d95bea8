"""The limits view: the rlimits every run gets, and which privileged kernel interfaces stay callable.

[limits].files and .core are rlimits, set here for every run. memory, cpu,
pids and wall depend on what the run can use (cgroup v2, v1, or rlimits and a
watchdog): viewbox.quota chooses that level at spawn time and adds its own
rlimits to the Plan then. disk caps the tmpfs sizes (viewbox.views.fs).

Syscall groups are families of calls that widen the kernel's attack surface
or reach outside the view (io_uring, bpf, ptrace, mount, ...). Every group is
denied (EPERM) unless [seccomp].allow names it; the C core's syscall table
(csrc/syscall_table.h) says which calls each group holds.
"""
from __future__ import annotations

import resource
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from viewbox.plan import Rlimit

if TYPE_CHECKING:
    from viewbox.policy.model import Policy
    from viewbox.views import CompileContext

#: Policy names of the syscall groups -> their VB_GROUP_* bit (csrc/viewbox.h).
SYSCALL_GROUPS: Mapping[str, int] = MappingProxyType({
    "io_uring": 1,
    "bpf": 2,
    "ptrace": 4,
    "keys": 8,
    "perf": 16,
    "userfaultfd": 32,
    "handles": 64,
    "mount": 128,
    "namespace": 256,
    "kernel": 512,
    "time_set": 1024,
    "tty_inject": 2048,
    "memory": 4096,
})
#: VB_GROUP_ALL
ALL_GROUPS = 8191


def denied_syscall_groups(policy: Policy) -> frozenset[str]:
    """Names of the syscall groups `policy` denies: all those [seccomp].allow does not name."""
    return frozenset(SYSCALL_GROUPS) - frozenset(policy.seccomp.allow)


def contribute(policy: Policy, context: CompileContext) -> dict[str, object]:
    denied = 0
    for name in denied_syscall_groups(policy):
        denied |= SYSCALL_GROUPS[name]
    files, core = policy.limits.files, policy.limits.core
    return {
        "seccomp_deny_groups": denied,
        "rlimits": (
            Rlimit(resource.RLIMIT_NOFILE, files, files),
            Rlimit(resource.RLIMIT_CORE, core, core),
        ),
    }
