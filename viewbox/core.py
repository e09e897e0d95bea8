"""The binding to the C core (csrc/viewbox.h): the only module that touches cffi.

It turns a Plan into a `struct vb_plan`, spawns, waits, and exposes the
kernel probes and the syscall table. Errors from the C side become
exceptions here, in one place (errors.spawn_error).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ._core import ffi, lib
from ._record import record
from .errors import PolicyError, spawn_error
from .plan import Plan

#: exit status the C core uses when it could not set a sandbox up (csrc/viewbox.h)
EXIT_SETUP = lib.VB_EXIT_SETUP


@record
class SyscallInfo:
    name: str
    nr: int
    group: str
    note: str


@record
class Usage:
    """What every process of a sandbox used, as the kernel accounted it at exit."""

    user_seconds: float
    system_seconds: float
    max_rss_bytes: int      # the largest resident set of any one process
    read_bytes: int         # filesystem input, in 512-byte blocks times 512
    write_bytes: int        # filesystem output, likewise
    wall_expired: bool      # the sandbox's init ended it at the plan's wall-time limit
    broker_lost: bool = False  # its init ended it: the broker deciding path calls was gone
    #: processes still running when the command ended, which died with it (None: not known)
    left_running: int | None = None
    # its own network's traffic that viewbox carried (None with the host's network)
    net_connections_in: int | None = None   # accepted by the forwarder ([net].publish)
    net_connections_out: int | None = None  # made by the supervisor ([net].allow)
    net_bytes_in: int | None = None         # relayed by the forwarder
    net_bytes_out: int | None = None


class Child:
    """A running sandbox: its init's pid and pidfd, and the status pipe."""

    def __init__(self, c_child: Any) -> None:
        self._c = c_child
        self.pid: int = c_child.pid
        self.pidfd: int = c_child.pidfd
        self.status_fd: int = c_child.status_fd
        #: with plan.net_names: the sandbox's DNS socket (127.0.0.53:53 inside), ours to answer and close
        self.resolver_fd: int = c_child.resolver_fd

    def job_stopped(self) -> tuple[bool, float]:
        """Whether the sandbox's init holds it stopped now (job control), and for how many
        seconds in all it held it stopped before."""
        held_ns = ffi.new("int64_t *")
        stopped = lib.vb_job_stopped(self._c, held_ns)
        return bool(stopped), held_ns[0] / 1e9

    def collect(self) -> tuple[int, Usage]:
        """The command's wait status and the sandbox's usage; call once status_fd
        is readable (it does not block then)."""
        wstatus = ffi.new("int *")
        usage = ffi.new("struct vb_usage *")
        lib.vb_wait(self._c, wstatus, usage)
        self.pidfd = self.status_fd = -1
        def counted(value: int) -> int | None:
            return None if value < 0 else int(value)

        return wstatus[0], Usage(usage.user_us / 1e6, usage.system_us / 1e6, usage.max_rss_kib * 1024,
                                 usage.in_blocks * 512, usage.out_blocks * 512, bool(usage.wall_expired),
                                 bool(usage.broker_lost), counted(usage.left_running), counted(usage.net_connections_in),
                                 counted(usage.net_connections_out), counted(usage.net_bytes_in),
                                 counted(usage.net_bytes_out))


def _set_net_rule(rule: Any, network: str, port_min: int, port_max: int) -> None:
    """Fills a struct vb_net_rule from "ADDRESS" or "ADDRESS/PREFIX" and a port range."""
    import ipaddress  # with socket, only for runs with [net].allow rules: a plain run never loads them
    import socket

    parsed = ipaddress.ip_network(network)
    rule.family = socket.AF_INET if parsed.version == 4 else socket.AF_INET6
    packed = parsed.network_address.packed
    ffi.memmove(rule.address, packed, len(packed))
    rule.prefix = parsed.prefixlen
    rule.port_min, rule.port_max = port_min, port_max


def _cstr(keep: list[Any], text: str) -> Any:
    if "\0" in text:
        raise ValueError(f"NUL byte in {text!r}")
    s = ffi.new("char[]", os.fsencode(text))
    keep.append(s)
    return s


def _cstr_array(keep: list[Any], items: Sequence[str]) -> Any:
    arr = ffi.new("char *[]", [_cstr(keep, x) for x in items] + [ffi.NULL])
    keep.append(arr)
    return arr


#: syscall families the supervisor sees when a run is audited (VB_FAMILY_*)
AUDITED_FAMILIES = lib.VB_FAMILY_FS | lib.VB_FAMILY_EXEC
#: VB_ACCESS_EXEC: a path rule about execution also interposes exec
_ACCESS_EXEC = lib.VB_ACCESS_EXEC


@record
class Request:
    """An access an ask rule holds until it is answered (csrc: struct vb_request)."""

    token: int
    sandbox: int
    pid: int
    syscall: str
    access: int       # VB_ACCESS_* bits
    path: str         # canonical path inside the view
    rule: str         # where the ask rule was written


class Supervisor:
    """Layer 3: one thread serving the seccomp listeners of every sandbox
    spawned with it (csrc/supervisor.c), without the GIL."""

    def __init__(self) -> None:
        import threading

        self._c = lib.vb_supervisor_new()
        if self._c == ffi.NULL:
            raise OSError(ffi.errno, f"start the supervisor: {os.strerror(ffi.errno)}")
        self._thread = threading.Thread(target=lib.vb_supervisor_run, args=(self._c,),
                                        name="viewbox-supervisor", daemon=True)
        self._thread.start()

    @property
    def serving(self) -> int:
        """How many sandboxes it serves now."""
        return int(lib.vb_supervisor_count(self._c))

    @property
    def request_fd(self) -> int:
        """Readable while ask rules hold calls (an eventfd: read 8 bytes to rearm)."""
        return int(lib.vb_supervisor_request_fd(self._c))

    def next_request(self) -> Request | None:
        """The oldest held call not yet handed out, or None."""
        out = ffi.new("struct vb_request *")
        if lib.vb_supervisor_next_request(self._c, out) != 0:
            return None
        return Request(out.token, out.sandbox_id, out.pid, ffi.string(out.syscall).decode(),
                       out.access, os.fsdecode(ffi.string(out.path)),
                       ffi.string(out.rule).decode(errors="replace"))

    def answer(self, token: int, answer: int) -> bool:
        """Answers a held call (VB_ANSWER_*); False if it no longer waits."""
        return int(lib.vb_supervisor_answer(self._c, token, answer)) == 0

    def pin(self, sandbox_id: int, address: str, port_min: int, port_max: int, origin: str, name: str) -> None:
        """Lets a served sandbox connect to `address` (one host) on those ports from now on: an
        address one of its [net].allow names resolved to. Raises OSError (ESRCH: not served,
        ENOSPC: it has VB_MAX_PINS already)."""
        rule = ffi.new("struct vb_net_rule *")
        _set_net_rule(rule, address, port_min, port_max)
        c_origin = ffi.new("char[]", origin.encode())
        rule.origin = c_origin
        rc = lib.vb_supervisor_pin(self._c, sandbox_id, rule, name.encode())
        if rc < 0:
            raise OSError(-rc, f"pin {address} for sandbox {sandbox_id}: {os.strerror(-rc)}")

    def stop(self) -> None:
        lib.vb_supervisor_stop(self._c)
        self._thread.join()
        lib.vb_supervisor_free(self._c)
        self._c = ffi.NULL


_supervisor: Supervisor | None = None


def supervisor() -> Supervisor:
    """The process-wide supervisor, started on first use (from any thread: one only)."""
    global _supervisor
    if _supervisor is None:
        import threading

        with _supervisor_lock.setdefault("lock", threading.Lock()):
            if _supervisor is None:
                _supervisor = Supervisor()
    return _supervisor


_supervisor_lock: dict[str, Any] = {}


_sandbox_ids = iter(range(1, 2**63))


def new_sandbox_id() -> int:
    """A number naming one sandbox in the events of this process."""
    return next(_sandbox_ids)


def spawn(plan: Plan, *, fds: dict[int, int], outer_uid: int, outer_gid: int,
          map_all_ids: bool, cgroup_fd: int = -1, cgroup_procs_fds: Sequence[int] = (),
          audit_fd: int = -1, sandbox_id: int = 0, ask_upcall: bool = False,
          publish_fds: Sequence[int] = (), netns_fd: int = -1, deny_note_fd: int = -1) -> Child:
    """Spawns the sandbox described by `plan`; `fds` maps host fds to fd numbers inside.
    `cgroup_fd` (a cgroup v2 directory) or `cgroup_procs_fds` (open cgroup.procs
    files of cgroup v1 hierarchies) put the sandbox in its cgroups before it runs.
    With `audit_fd`, the supervisor sees the filesystem and exec calls and
    writes one JSON line per call there. With path rules in the plan, it
    emulates path calls through the sandbox's broker and decides them; ask
    rules wait for `Supervisor.answer` when `ask_upcall`, else they deny.
    `publish_fds` are the listening sockets bound for plan.publish, in its order.
    `netns_fd` is a network namespace set up for the sandbox (mode "private"):
    it is cloned into that one instead of a new one. With plan.net_allow, the
    supervisor connects to those destinations for the sandbox, and writes a
    one-line note on `deny_note_fd` the first time it refuses a destination.

    Returns once the command has been exec'd; raises SpawnError (or a
    subclass) naming the step that failed otherwise. The C structs only need
    to live until vb_spawn returns: the child has its own copy of memory.
    """
    keep: list[Any] = []
    p = ffi.new("struct vb_plan *")
    p.argv = _cstr_array(keep, plan.argv)
    p.envp = _cstr_array(keep, [f"{k}={v}" for k, v in plan.env.items()])
    p.path_search = _cstr(keep, plan.path_search)
    p.workdir = _cstr(keep, plan.workdir)
    p.hostname = _cstr(keep, plan.hostname) if plan.hostname else ffi.NULL
    p.base = int(plan.base)

    mounts = ffi.new("struct vb_mount[]", max(1, len(plan.mounts)))
    for i, op in enumerate(plan.mounts):
        m = mounts[i]
        m.kind = int(op.kind)
        m.flags = (lib.VB_MF_RDONLY if op.readonly else 0) | (lib.VB_MF_OPTIONAL if op.optional else 0)
        m.source = _cstr(keep, op.source) if op.source else ffi.NULL
        m.target = _cstr(keep, op.target)
        m.data = _cstr(keep, op.options) if op.options else ffi.NULL
    p.mounts, p.n_mounts = mounts, len(plan.mounts)

    p.unshare_net = int(plan.unshare_net)
    p.netns_fd = netns_fd
    p.uid, p.gid = plan.uid, plan.gid
    p.outer_uid, p.outer_gid = outer_uid, outer_gid
    p.map_all_ids = int(map_all_ids)

    rules = ffi.new("struct vb_landlock_rule[]", max(1, len(plan.landlock_rules)))
    for i, rule in enumerate(plan.landlock_rules):
        rules[i].path = _cstr(keep, rule.path)
        rules[i].access = rule.access
    p.landlock_abi = plan.landlock_abi
    p.landlock_handled_fs = plan.landlock_handled_fs
    p.landlock_scopes = plan.landlock_scopes
    p.landlock_rules, p.n_landlock_rules = rules, len(plan.landlock_rules)

    p.seccomp_deny_groups = plan.seccomp_deny_groups

    rlimits = ffi.new("struct vb_rlimit[]", max(1, len(plan.rlimits)))
    for i, rl in enumerate(plan.rlimits):
        rlimits[i].resource, rlimits[i].soft, rlimits[i].hard = rl.resource, rl.soft, rl.hard
    p.rlimits, p.n_rlimits = rlimits, len(plan.rlimits)

    fd_map = ffi.new("struct vb_fd_map[]", max(1, len(fds)))
    for i, (parent_fd, child_fd) in enumerate(sorted(fds.items(), key=lambda kv: kv[1])):
        fd_map[i].parent_fd, fd_map[i].child_fd = parent_fd, child_fd
    p.fds, p.n_fds = fd_map, len(fds)
    p.wall_ms = plan.wall_ms
    if plan.time_view:
        p.time_view = 1
        p.time_has_start = int(plan.time_start_ns is not None)
        p.time_start_ns = plan.time_start_ns or 0
        p.time_offset_ns = plan.time_offset_ns
        p.time_rate = plan.time_rate
        p.time_frozen = int(plan.time_frozen)
        p.time_strict = int(plan.time_strict)
        p.time_file_times = int(plan.time_file_times)
    p.cgroup_fd = cgroup_fd
    p.audit_fd = audit_fd
    p.sandbox_id = sandbox_id or new_sandbox_id()
    path_rules = ffi.new("struct vb_path_rule[]", max(1, len(plan.path_rules)))
    keep.append(path_rules)
    for i, path_rule in enumerate(plan.path_rules):
        path_rules[i].glob = _cstr(keep, path_rule.glob)
        path_rules[i].access = int(path_rule.access)
        path_rules[i].action = int(path_rule.action)
        path_rules[i].origin = _cstr(keep, path_rule.origin)
    p.path_rules, p.n_path_rules = path_rules, len(plan.path_rules)
    p.ask_upcall = int(ask_upcall)
    families = AUDITED_FAMILIES if audit_fd >= 0 else 0
    if plan.path_rules:
        # connect and bind too: a path-named unix socket is decided by the same rules
        families |= lib.VB_FAMILY_FS | lib.VB_FAMILY_NET
        if any(rule.access & _ACCESS_EXEC for rule in plan.path_rules):
            families |= lib.VB_FAMILY_EXEC
    if plan.net_allow or plan.net_names:
        families |= lib.VB_FAMILY_NET
    if plan.time_view:
        families |= lib.VB_FAMILY_CLOCK  # the supervisor answers the clock reads
    if plan.time_file_times and families & lib.VB_FAMILY_FS and not plan.path_rules:
        # an audit alone lets the stat family run as it is, after the filter sent it to the
        # supervisor: neither the supervisor nor the tracer sees its result
        raise PolicyError('[time].file_times = "sandbox" does not work with an audit unless the policy has '
                          'path rules; set file_times = "host" or add a rule')
    if families:
        p.interpose_families = families
        p.supervisor = supervisor()._c
    procs = ffi.new("int[]", list(cgroup_procs_fds) or [-1])
    p.cgroup_procs_fds, p.n_cgroup_procs_fds = procs, len(cgroup_procs_fds)

    # [net].listen: the sockets are among `fds`, from fd 3 on, in plan.listen's order
    p.listen_fds = len(plan.listen)
    p.listen_fdnames = _cstr(keep, ":".join(sock.name for sock in plan.listen)) if plan.listen else ffi.NULL
    # [net].publish: publish_fds[i] is bound to plan.publish[i]'s host address
    published = ffi.new("struct vb_publish[]", max(1, len(plan.publish)))
    keep.append(published)
    for i, (fd, port) in enumerate(zip(publish_fds, plan.publish, strict=True)):
        published[i].host_fd, published[i].port = fd, port.port
    p.publish, p.n_publish = published, len(plan.publish)

    # [net].allow: the supervisor's connect() rules
    net_rules = ffi.new("struct vb_net_rule[]", max(1, len(plan.net_allow)))
    keep.append(net_rules)
    for i, net_rule in enumerate(plan.net_allow):
        _set_net_rule(net_rules[i], net_rule.network, net_rule.port_min, net_rule.port_max)
        net_rules[i].origin = _cstr(keep, net_rule.origin)
    p.net_allow, p.n_net_allow = net_rules, len(plan.net_allow)
    p.deny_note_fd = deny_note_fd
    p.resolver = int(bool(plan.net_names))

    c_child = ffi.new("struct vb_child *")
    error = ffi.new("struct vb_error *")
    rc = lib.vb_spawn(p, c_child, error)
    if rc != 0:
        what = ffi.string(error.what).decode(errors="replace")
        if not what:
            raise spawn_error("spawn the sandbox", -rc, EXIT_SETUP)
        raise spawn_error(what, error.err, error.exit_code or EXIT_SETUP)
    return Child(c_child)


@lru_cache(maxsize=None)
def syscall_table() -> tuple[SyscallInfo, ...]:
    """The C core's syscall table: what each specially treated syscall is and why."""
    count = ffi.new("size_t *")
    rows = lib.vb_syscall_table(count)
    out = []
    for i in range(count[0]):
        row = rows[i]
        out.append(SyscallInfo(ffi.string(row.name).decode(), row.nr,
                               ffi.string(lib.vb_group_name(row.group)).decode(),
                               ffi.string(row.note).decode()))
    return tuple(out)


@lru_cache(maxsize=None)
def time_table() -> tuple[tuple[str, int, str], ...]:
    """The time view's rows of the syscall table: (name, the VB_TRAP_* bit that traps it, note)."""
    count = ffi.new("size_t *")
    rows = lib.vb_time_table(count)
    return tuple((ffi.string(rows[i].name).decode(), int(rows[i].trap), ffi.string(rows[i].note).decode())
                 for i in range(count[0]))


def time_traps(*, rate: float, frozen: bool, strict: bool, file_times: bool) -> int:
    """The VB_TRAP_* bits a time view with these settings traps (the C core's vb_time_traps)."""
    p = ffi.new("struct vb_plan *")
    p.time_view = 1
    p.time_rate = rate
    p.time_frozen = int(frozen)
    p.time_strict = int(strict)
    p.time_file_times = int(file_times)
    return int(lib.vb_time_traps(p))


def seccomp_program(deny_groups: int, interpose_families: int = 0, time_traps: int = 0) -> bytes:
    """The seccomp program for `deny_groups` (and the interposed families, and the time view's
    traps: VB_TRAP_* bits), as raw sock_filter bytes."""
    buf = ffi.new("char[]", 8 * lib.VB_SECCOMP_MAX_INSNS)  # 8 bytes a struct sock_filter
    n = lib.vb_seccomp_build(deny_groups, interpose_families, time_traps, buf, lib.VB_SECCOMP_MAX_INSNS)
    if n < 0:
        raise OSError(-n, os.strerror(-n))
    return bytes(ffi.buffer(buf, 8 * n))


# --- kernel probes (csrc/probe.c), used by viewbox.doctor ---------------

def probe_clone(flags: int, with_userns: bool) -> int:
    return int(lib.vb_probe_clone(flags, int(with_userns)))


@lru_cache(maxsize=None)
def probe_landlock_abi() -> int:
    return int(lib.vb_probe_landlock_abi())


def probe_seccomp_notify() -> int:
    return int(lib.vb_probe_seccomp_notify())


def probe_pidfd() -> int:
    return int(lib.vb_probe_pidfd())


def probe_trace(with_userns: bool) -> int:
    return int(lib.vb_probe_trace(int(with_userns)))
