"""`viewbox doctor`: which enforcement layers this machine and this user have.

Every layer is probed by doing what the sandbox setup does (a throw-away
clone(), a Landlock ABI query, a seccomp listener in a child), so the answer
holds for the current user under the current kernel, sysctls, security
modules and any sandbox we already run in. The run path calls probe() to
fail closed; the CLI prints render(probe()) or probe().to_dict() as JSON.
"""
from __future__ import annotations

import errno
import functools
import operator
import os
import pwd
import re
from viewbox._record import asdict, record
from typing import Any

from viewbox.core import probe_clone, probe_landlock_abi, probe_pidfd, probe_seccomp_notify, probe_trace
from viewbox.policy import SHIPPED, Policy, load_policy

__all__ = ["CgroupInfo", "Layer", "Probe", "blocking_layers", "probe", "render"]

# linux/sched.h; the os module only has these from Python 3.12.
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# (layer name, clone flag, flag name, what the namespace gives the sandbox,
#  what its absence means)
_NAMESPACES = (
    ("mountns", CLONE_NEWNS, "CLONE_NEWNS",
     "the view (base, ro/rw/hide/tmpfs mounts, pivot_root) is built in its own mount table",
     "no policy can run: every view is built in a mount namespace"),
    ("pidns", CLONE_NEWPID, "CLONE_NEWPID",
     "the sandbox has its own pid 1 and cannot see or signal host processes",
     "no policy can run: the sandbox's init is pid 1 of its own pid namespace"),
    ("netns", CLONE_NEWNET, "CLONE_NEWNET",
     'net.mode = "none" gives the sandbox its own network with only loopback',
     'only policies with net.mode = "host" can run'),
    ("ipcns", CLONE_NEWIPC, "CLONE_NEWIPC",
     "System V IPC and POSIX message queues are private",
     "no policy can run: every sandbox gets private IPC"),
    ("utsns", CLONE_NEWUTS, "CLONE_NEWUTS",
     "the hostname is private",
     "no policy can run: every sandbox gets a private hostname"),
    ("cgroupns", CLONE_NEWCGROUP, "CLONE_NEWCGROUP",
     "the sandbox sees its own cgroup as the root, not the host's cgroup tree",
     "no policy can run: every sandbox gets its own cgroup namespace"),
    ("timens", CLONE_NEWTIME, "CLONE_NEWTIME",
     "CLOCK_MONOTONIC and CLOCK_BOOTTIME can be offset per sandbox",
     "the sandbox shares the host's CLOCK_MONOTONIC and CLOCK_BOOTTIME"),
)

# What each Landlock ABI adds over the one before it.
LANDLOCK_FEATURES = {
    1: "filesystem rights",
    2: "refer",
    3: "truncate",
    4: "TCP ports",
    5: "ioctl on devices",
    6: "signal/abstract-unix scoping",
    7: "audit logging",
}

# cgroup controllers behind [limits] memory, cpu and pids.
LIMIT_CONTROLLERS = ("memory", "cpu", "pids")

# What every run uses, whatever the policy: csrc/spawn.c clones with these
# namespaces (a user namespace even as root, mapping all ids) and
# CLONE_PIDFD, and installs the layer-2 seccomp filter.
RUN_NEEDS = ("userns", "mountns", "pidns", "ipcns", "utsns", "cgroupns", "seccomp", "pidfd")


@record
class Layer:
    name: str
    available: bool
    detail: str        # what was found; for a missing layer, why and the fix
    consequence: str   # what it means for policies


@record
class CgroupInfo:
    version: str                        # "v2", "v1", "hybrid" or "none"
    v2_mount: str | None                # where cgroup2 is mounted
    v2_cgroup: str | None               # this process's cgroup dir: where the sandbox's would go
    v2_controllers: tuple[str, ...]     # cgroup.controllers of that dir
    v2_writable: bool                   # the current user may create a child cgroup there
    v1_mounts: dict[str, str]           # controller -> mount point, for LIMIT_CONTROLLERS
    v1_writable: tuple[str, ...]        # controllers whose root the current user may write


@record
class Probe:
    user: str
    privileged: bool   # euid 0 with the full identity uid map: no user namespace needed
    layers: tuple[Layer, ...]
    landlock_abi: int  # 0 when Landlock is unavailable
    userns: bool
    seccomp_notify: bool
    cgroup: CgroupInfo

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def probe() -> Probe:
    """Probes this machine for the current user, once per process."""
    privileged = _is_privileged()
    userns = _userns_layer(privileged)
    abi = probe_landlock_abi()
    notify_err = -probe_seccomp_notify()  # 0 or errno
    cgroup = cgroup_info()
    layers = (
        userns,
        *_namespace_layers(privileged, userns),
        _seccomp_layer(notify_err),
        _seccomp_notify_layer(notify_err),
        seccomp_addfd_layer(notify_err),
        _landlock_layer(abi),
        _cgroups_layer(cgroup),
        _pidfd_layer(probe_pidfd()),
        _time_trace_layer(userns.available),
        _private_net_layer(privileged),
    )
    return Probe(user=_user(), privileged=privileged, layers=layers,
                 landlock_abi=max(abi, 0), userns=userns.available,
                 seccomp_notify=notify_err == 0, cgroup=cgroup)


def blocking_layers(probe: Probe, policy: Policy) -> list[Layer]:
    """Missing layers that stop `policy` from starting here (fail closed)."""
    needed = set(RUN_NEEDS)
    if policy.net.mode != "host":
        needed.add("netns")
    if "landlock" not in policy.viewbox.accept_degraded:
        needed.add("landlock")
    if policy.net.mode == "private":
        needed.add("private-net")
    if policy.net.allow:  # the supervisor puts the sockets it connected in place (ADDFD)
        needed |= {"seccomp-notify", "seccomp-addfd"}
    if policy.time.active:  # a time namespace, the init tracing the command, the supervisor's clock reads
        needed |= {"timens", "time-trace", "seccomp-notify"}
    return [layer for layer in probe.layers if layer.name in needed and not layer.available]


def render(probe: Probe) -> str:
    """The human report: a line per layer, then what it means for policies."""
    who = "privileged" if probe.privileged else "unprivileged"
    lines = [f"viewbox doctor: Linux {os.uname().release}, {probe.user}, {who}", ""]
    for layer in probe.layers:
        status = "ok" if layer.available else "MISSING"
        lines.append(f"  {status:<7}  {layer.name:<15} {layer.detail}")
        lines.append(f"  {'':<7}  {'':<15} -> {layer.consequence}")
    lines += ["", "What this means", _meaning(probe)]
    return "\n".join(lines) + "\n"


def _meaning(probe: Probe) -> str:
    if probe.privileged:
        sentences = ["Running as privileged root: the sandbox's user namespace maps every id 1:1."]
    else:
        sentences = ["Running unprivileged: every sandbox is made inside a user namespace "
                     "owned by this user."]
    missing = [layer.name for layer in probe.layers if not layer.available]
    essential = [name for name in missing if name in RUN_NEEDS]
    if essential:
        sentences.append(f"No policy can run here: {', '.join(essential)} missing (see above).")
    else:
        refusals = {name: blocking_layers(probe, load_policy(name)) for name in SHIPPED}
        runnable = [name for name, blocking in refusals.items() if not blocking]
        if runnable:
            sentences.append(f"Shipped policies that run here: {', '.join(runnable)}.")
        for name, blocking in refusals.items():
            if blocking:
                names = ", ".join(layer.name for layer in blocking)
                sentences.append(f"Policy {name} refuses to start: {names} missing.")
    if not missing:
        sentences.append("Every layer is present.")
    elif not essential:
        sentences.append(f"Missing here: {', '.join(missing)}; see above for what a sandbox "
                         "goes without.")
    import textwrap  # only for the report: not on the run path, which imports this module for cgroups

    return textwrap.fill(" ".join(sentences), width=88, initial_indent="  ",
                         subsequent_indent="  ")


# --- identity -----------------------------------------------------------------


def _user() -> str:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "?"
    return f"{name} (uid {uid})"


def _is_privileged() -> bool:
    # Root inside someone else's user namespace cannot mount or map ids freely.
    if os.geteuid() != 0:
        return False
    with open("/proc/self/uid_map", encoding="ascii") as f:
        return f.read().split() == ["0", "0", "4294967295"]


# --- namespaces ---------------------------------------------------------------


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _userns_failure(err: int) -> str:
    """Why clone(CLONE_NEWUSER) failed with `err`, and the fix."""
    why = f"clone(CLONE_NEWUSER): {os.strerror(err)}"
    if _read_sysctl("/proc/sys/user/max_user_namespaces") == "0":
        return (f"{why}: user.max_user_namespaces is 0; "
                "fix: sysctl -w user.max_user_namespaces=15000")
    if _read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return (f"{why}: kernel.unprivileged_userns_clone is 0; "
                "fix: sysctl -w kernel.unprivileged_userns_clone=1")
    if _read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return (f"{why}: AppArmor restricts unprivileged user namespaces; fix: an AppArmor "
                "profile allowing `userns,` for this Python, or "
                "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    if err == errno.ENOSPC:
        return f"{why}: the user.max_user_namespaces limit is reached; fix: raise it with sysctl"
    if err == errno.EINVAL:
        return f"{why}: the kernel is built without user namespaces (CONFIG_USER_NS)"
    if err == errno.EUSERS:
        return f"{why}: user namespaces are nested 32 deep already"
    return (f"{why}: denied by a chroot, or a seccomp filter or security module of the "
            "surrounding container; fix: run as root, or allow user namespaces there")


def _userns_layer(privileged: bool) -> Layer:
    err = -probe_clone(CLONE_NEWUSER, False)
    if err:
        return Layer("userns", False, _userns_failure(err),
                     "no policy can run: every sandbox is created in a user namespace")
    if privileged:
        return Layer("userns", True, "clone(CLONE_NEWUSER) works",
                     "root's ids are mapped 1:1 into the sandbox's user namespace")
    return Layer("userns", True, "clone(CLONE_NEWUSER) works",
                 "the sandbox's other namespaces are made inside it: no root needed")


def _namespace_layers(privileged: bool, userns: Layer) -> list[Layer]:
    if not privileged and not userns.available:
        return [Layer(name, False, f"{flag_name} needs root or a user namespace (see userns)",
                      without) for name, _, flag_name, _, without in _NAMESPACES]
    # The run path probes too: one clone with every flag is the common case
    # and costs about what one namespace costs; only when it fails is each
    # namespace tried alone, to say which one is missing.
    all_flags = functools.reduce(operator.or_, (ns[1] for ns in _NAMESPACES))
    together = probe_clone(all_flags, not privileged) == 0
    return [_namespace_layer(ns, privileged, together) for ns in _NAMESPACES]


def _namespace_layer(ns: tuple[str, int, str, str, str], privileged: bool,
                     works_with_all: bool) -> Layer:
    name, flag, flag_name, gives, without = ns
    call = flag_name if privileged else f"CLONE_NEWUSER|{flag_name}"
    err = 0 if works_with_all else -probe_clone(flag, not privileged)
    if err:
        return Layer(name, False, f"clone({call}): {os.strerror(err)}", without)
    return Layer(name, True, f"clone({call}) works", gives)


# --- seccomp ------------------------------------------------------------------


def _seccomp_layer(notify_err: int) -> Layer:
    consequence = "dangerous syscalls (io_uring, bpf, ptrace, mount, ...) are denied by a filter"
    if notify_err == 0:
        return Layer("seccomp", True, "filter mode works (a test filter was installed in a child)",
                     consequence)
    with open("/proc/self/status", encoding="ascii") as f:
        has_seccomp = any(line.startswith("Seccomp:") for line in f)
    if has_seccomp:
        return Layer("seccomp", True,
                     "Seccomp: line in /proc/self/status (CONFIG_SECCOMP), filter mode assumed",
                     consequence)
    return Layer("seccomp", False, "the kernel is built without seccomp (CONFIG_SECCOMP)",
                 "no policy can run: every sandbox runs under the layer-2 filter")


def _seccomp_notify_layer(err: int) -> Layer:
    if err == 0:
        return Layer("seccomp-notify", True,
                     "a filter with SECCOMP_FILTER_FLAG_NEW_LISTENER installs (Linux >= 5.0)",
                     "the supervisor serves per-path rules, audit, learn, ask, egress decisions "
                     "and the time view's clock reads")
    reason = os.strerror(err)
    if err == errno.EBUSY:  # only one listener per filter chain
        reason += " (this process already runs under a supervisor: nested sandboxes lack it)"
    return Layer("seccomp-notify", False, f"seccomp user notification: {reason}",
                 "layer 3 cannot run here: no per-path deny rules, audit, learn, ask, "
                 "egress decisions or [time] tables")


def _kernel_version() -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def seccomp_addfd_layer(notify_err: int) -> Layer:
    version = _kernel_version()
    # No harmless way to call SECCOMP_IOCTL_NOTIF_ADDFD without a trapped
    # syscall, so this one is read off the kernel version.
    where = f"from the kernel version ({version[0]}.{version[1]})"
    missing = "per-path rules cannot run: their opens are emulated and the fd installed with ADDFD"
    if notify_err:
        return Layer("seccomp-addfd", False, "needs seccomp user notification", missing)
    if version >= (5, 14):
        return Layer("seccomp-addfd", True,
                     f"SECCOMP_IOCTL_NOTIF_ADDFD with ADDFD_FLAG_SEND (>= 5.14), {where}",
                     "per-path rules: the broker opens as the command, the supervisor installs the fd atomically")
    if version >= (5, 9):
        return Layer("seccomp-addfd", False,
                     f"ADDFD exists (>= 5.9) but ADDFD_FLAG_SEND needs >= 5.14, {where}", missing)
    return Layer("seccomp-addfd", False, f"ADDFD needs Linux >= 5.9, {where}", missing)


# --- Landlock -----------------------------------------------------------------


def _landlock_layer(abi: int) -> Layer:
    missing = 'no Landlock: policies run only with accept_degraded = ["landlock"]'
    if abi == -errno.ENOSYS:
        return Layer("landlock", False, "the kernel is built without Landlock "
                     "(CONFIG_SECURITY_LANDLOCK, Linux >= 5.13)", missing)
    if abi == -errno.EOPNOTSUPP:
        return Layer("landlock", False, "Landlock is built in but disabled; "
                     "fix: add landlock to the lsm= boot parameter", missing)
    if abi < 0:
        return Layer("landlock", False, f"landlock_create_ruleset: {os.strerror(-abi)}", missing)
    features = ", ".join(f"{text} ({level})" for level, text in LANDLOCK_FEATURES.items()
                         if level <= abi)
    lacks = [text for level, text in LANDLOCK_FEATURES.items() if level > abi]
    detail = f"ABI {abi}: {features}" + (f"; not: {', '.join(lacks)}" if lacks else "")
    if abi >= 4:
        consequence = (f"Landlock ABI {abi}: filesystem rules and TCP ports are enforced a "
                       "second time beneath the mounts")
    else:
        consequence = (f"Landlock ABI {abi}: filesystem rules are enforced a second time beneath "
                       "the mounts; TCP ports only by the namespaces and seccomp (needs ABI 4)")
    return Layer("landlock", True, detail, consequence)


# --- cgroups ------------------------------------------------------------------


def _unescape(field: str) -> str:
    """Undoes mountinfo's octal escapes (\\040 for a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def cgroup_info() -> CgroupInfo:
    """The cgroup facts alone (the layout, this process's cgroups, what it may write): what
    a run with limits needs, without the other probes' clones and filters."""
    v2_mount: str | None = None
    v2_root = "/"
    v1_mounts: dict[str, str] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            # id parent dev root mountpoint opts [optional...] - fstype source superopts
            before, _, after = line.partition(" - ")
            fields, (fstype, _src, superopts) = before.split(), after.split()[:3]
            root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
            if fstype == "cgroup2" and v2_mount is None:
                v2_mount, v2_root = mountpoint, root
            elif fstype == "cgroup":
                for controller in superopts.split(","):
                    if controller in LIMIT_CONTROLLERS:
                        v1_mounts.setdefault(controller, mountpoint)
    v2_cgroup = None
    controllers: tuple[str, ...] = ()
    if v2_mount is not None:
        v2_cgroup = _own_v2_cgroup(v2_mount, v2_root)
        # The controllers of our own cgroup are the ones a child of it can enable.
        try:
            with open(os.path.join(v2_cgroup, "cgroup.controllers"), encoding="ascii") as f:
                controllers = tuple(f.read().split())
        except OSError:
            controllers = ()
    if v2_mount and v1_mounts:
        version = "hybrid"
    elif v2_mount:
        version = "v2"
    elif v1_mounts:
        version = "v1"
    else:
        version = "none"
    return CgroupInfo(
        version=version, v2_mount=v2_mount, v2_cgroup=v2_cgroup, v2_controllers=controllers,
        v2_writable=v2_cgroup is not None and os.access(v2_cgroup, os.W_OK),
        v1_mounts=v1_mounts,
        v1_writable=tuple(c for c, path in v1_mounts.items() if os.access(path, os.W_OK)))


def _own_v2_cgroup(mount: str, mount_root: str) -> str:
    """This process's cgroup directory, from the "0::" line of /proc/self/cgroup."""
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        path = next((line[3:].rstrip("\n") for line in f if line.startswith("0::")), "/")
    # The path is relative to the cgroup namespace root; a mount of a subtree
    # (containers) shows that subtree at its mount point.
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root):]
    return os.path.normpath(mount + "/" + path)


def _cgroups_layer(info: CgroupInfo) -> Layer:
    needed = set(LIMIT_CONTROLLERS)
    if info.v2_writable and needed <= set(info.v2_controllers):
        return Layer("cgroups", True,
                     f"{info.version}: v2 at {info.v2_cgroup}, controllers "
                     f"{' '.join(info.v2_controllers)}, writable",
                     "limits on memory, cpu and pids are enforced in a child cgroup (v2)")
    if needed <= set(info.v1_writable):
        paths = ", ".join(info.v1_mounts[c] for c in LIMIT_CONTROLLERS)
        return Layer("cgroups", True, f"{info.version}: v1 {paths}, writable",
                     "limits on memory, cpu and pids are enforced in child cgroups (v1 fallback)")
    found = []
    if info.v2_mount:
        found.append(f"v2 at {info.v2_cgroup} with controllers "
                     f"[{' '.join(info.v2_controllers)}], "
                     f"{'writable' if info.v2_writable else 'not writable'}")
    if info.v1_mounts:
        found.append("v1 " + ", ".join(
            f"{c} at {p} {'writable' if c in info.v1_writable else 'not writable'}"
            for c, p in info.v1_mounts.items()))
    detail = (f"{info.version}: " + "; ".join(found)) if found else "no cgroup filesystem mounted"
    return Layer("cgroups", False, detail,
                 "memory, cpu and pids cannot be limited through cgroups; rlimits still apply")


# --- pidfd --------------------------------------------------------------------


def _pidfd_layer(ret: int) -> Layer:
    if ret == 0:
        return Layer("pidfd", True, "pidfd_open works",
                     "the supervisor tracks each sandbox by pidfd, immune to pid reuse")
    return Layer("pidfd", False, f"pidfd_open: {os.strerror(-ret)} (needs Linux >= 5.3)",
                 "no policy can run: the supervisor tracks every sandbox through a pidfd")


def _time_trace_layer(userns: bool) -> Layer:
    """Whether the sandbox's init may trace its command, as the time view needs (x86_64)."""
    missing = "policies with a [time] table cannot run: the clock is kept by tracing the command"
    machine = os.uname().machine
    if machine != "x86_64":
        return Layer("time-trace", False, f"the time view reads x86_64 registers; this is {machine}",
                     missing)
    err = -probe_trace(userns)
    if err:
        hint = " (kernel.yama.ptrace_scope = 3 forbids it)" if err == errno.EPERM else ""
        return Layer("time-trace", False, f"PTRACE_SEIZE of a child: {os.strerror(err)}{hint}", missing)
    return Layer("time-trace", True, "a process may PTRACE_SEIZE its own child (in a user namespace)",
                 "[time]: the sandbox's init hides the vDSO at each exec and rewrites timeouts")


def _private_net_layer(privileged: bool) -> Layer:
    """Whether net.mode = "private" can be wired here: root, and pyroute2 for netlink."""
    consequence_missing = ('policies with net.mode = "private" cannot run; "none" with listen, '
                           "publish and allow still can")
    if not privileged:
        return Layer("private-net", False, "needs root: it creates a veth pair, addresses, routes and NAT rules "
                     "in the host's network", consequence_missing)
    try:
        import pyroute2  # noqa: F401  (only probed: the run imports it when it wires a network)
    except ImportError:
        return Layer("private-net", False, "pyroute2 is not installed (pip install pyroute2)", consequence_missing)
    return Layer("private-net", True, "root, pyroute2: veth pairs, addresses, routes, nftables NAT",
                 'net.mode = "private" gives a sandbox its own interface to the host, with NAT')
