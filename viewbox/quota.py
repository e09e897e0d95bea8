"""Quotas and accounting: how a sandbox is held to its [limits], and what it used.

The enforcement level is chosen for each run from what this machine and user
can do (the facts `viewbox doctor` reports: doctor.cgroup_info()), strongest
first, and reported in the usage, the audit start event and `--report`:

  cgroup v2  a child cgroup per sandbox under the caller's own cgroup, the
             sandbox cloned straight into it (CLONE_INTO_CGROUP): memory.max,
             memory.swap.max = 0, memory.oom.group = 1, cpu.max, pids.max.
             The caller's cgroup must enable the controllers for its children,
             which the kernel refuses while it holds processes (the root cgroup
             excepted); viewbox does not move its caller, so on a pure v2 host a
             caller in a session or service cgroup gets the rlimit level.
  cgroup v1  a child cgroup per sandbox in the memory, cpu and pids
             hierarchies, each under the caller's own cgroup there; the C core
             writes the sandbox's init into each cgroup.procs before anything
             of the sandbox runs: memory.limit_in_bytes (and memsw: no swap),
             cpu.cfs_quota_us, pids.max.
  rlimit     no cgroup can be written (unprivileged, no delegation): a
             watchdog samples the sandbox's tasks and memory in the view's own
             /proc and ends the run at pids tasks or past memory; RLIMIT_NPROC,
             which Linux >= 5.14 counts per user namespace (the sandbox's tasks
             only), is the kernel's stop between samples (NPROC_HEADROOM; not
             enforced for host uid 0); cpu cannot be held at all, so a cpu
             limit fails closed.

A cgroup is only made when the policy sets memory, cpu or pids (the default
policy sets memory and pids), or requires a cgroup; otherwise the run is at
the rlimit level and the usage comes from the
kernel's accounting of the reaped processes (wait4) alone.

The waiter (Process.wait, poll, communicate) calls `check()` between short
polls: wall time, the cgroup's OOM and pids counters, the watchdog's samples.
On a breach the whole sandbox is killed (SIGKILL to its init: the kernel ends
its pid namespace) and the limit is reported.

Cgroups are named viewbox-<pid>-<n>, <pid> being the creating process, and are
removed once the sandbox is reaped. A viewbox killed with SIGKILL cannot remove
its own, so every run that creates cgroups first sweeps the viewbox-* cgroups
beside its own whose creator is gone; the kernel refuses to remove a cgroup
that still holds processes, so a live sandbox's cgroup is never swept.
"""
from __future__ import annotations

import itertools
import os
import re
import resource
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ._record import replace
from .errors import UnavailableLayer
from .plan import MountKind, Plan, Rlimit

if TYPE_CHECKING:
    from .core import Usage as KernelUsage
    from .doctor import CgroupInfo
    from .policy.model import LimitsTable, Origin

LEVEL_CGROUP_V2 = "cgroup v2"
LEVEL_CGROUP_V1 = "cgroup v1"
LEVEL_RLIMIT = "rlimit"
LEVELS = (LEVEL_CGROUP_V2, LEVEL_CGROUP_V1, LEVEL_RLIMIT)

#: exit status of `viewbox run` when a limit ended the run (as timeout(1) uses for its timeout)
LIMIT_EXIT_STATUS = 124

CONTROLLERS = ("memory", "cpu", "pids")
CGROUP_PREFIX = "viewbox-"
CPU_PERIOD_US = 100_000
#: how often the cgroup counters are read while a memory or pids limit is set
CGROUP_POLL = 0.05
#: how often the rlimit level's watchdog samples the sandbox's processes
WATCHDOG_POLL = 0.02
#: At the rlimit level the watchdog ends the run when it counts [limits].pids tasks, and
#: RLIMIT_NPROC, this many times that, stops a fork bomb between its samples. Not the limit
#: itself: the kernel counts a fork in flight before it checks, so racing forks fail short of
#: RLIMIT_NPROC (a bomb whose processes all spin on fork(), preempted mid-fork, settles tens
#: of tasks below it), and the watchdog would wait for a count the sandbox never shows.
NPROC_HEADROOM = 2
#: seconds past [limits].wall after which viewbox kills a sandbox whose init has not ended it
WALL_BACKSTOP = 1.0
#: how long removing a cgroup may wait for the kernel to let go of its last task
RMDIR_PATIENCE = 0.5

_NAME = re.compile(re.escape(CGROUP_PREFIX) + r"(\d+)-(\d+)")
_serial = itertools.count(1)


# --- the report --------------------------------------------------------------------

class Usage(NamedTuple):
    """What a sandbox used and how it ended, for `Result.usage`, `Process.usage` and `--report`.

    CPU times, max_rss_bytes, read_bytes and write_bytes are the kernel's
    accounting of every process the sandbox reaped (wait4), as /usr/bin/time
    reports them. memory_peak_bytes and pids_peak are the whole sandbox's
    peaks: from its cgroup, or sampled by the watchdog (rlimit level); None
    when neither measured them."""

    level: str                      # "cgroup v2", "cgroup v1" or "rlimit"
    wall_seconds: float
    user_seconds: float
    system_seconds: float
    max_rss_bytes: int              # the largest resident set of any one process
    memory_peak_bytes: int | None   # the whole sandbox at its peak
    pids_peak: int | None           # tasks (processes and threads), the init included
    read_bytes: int                 # read from storage (tmpfs reads are not storage)
    write_bytes: int                # written to storage, e.g. through rw binds
    # What crossed the sandbox's network edge (see `network_usage`); None: not all of it was seen.
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    net_connections_in: int | None = None
    net_connections_out: int | None = None
    limit: str | None = None        # the limit that ended the run: "memory", "pids" or "wall"
    reason: str | None = None       # one line saying so: "memory limit 128 MiB reached (peak 128 MiB)"

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


def format_bytes(size: int) -> str:
    """134217728 -> "128 MiB"; 1610612736 -> "1.5 GiB"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size // scale} {unit}" if size % scale == 0 else f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def format_seconds(seconds: float) -> str:
    return f"{seconds:g} s"


LIMITS = ("memory", "cpu", "pids", "wall", "disk", "files", "core", "require")


def limits_dict(limits: LimitsTable) -> dict[str, Any]:
    """The [limits] of a run, as the audit start event and the report show them."""
    return {name: getattr(limits, name) for name in LIMITS}


# --- files of a cgroup ----------------------------------------------------------------

def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file ("oom_kill 1\\nmax 0\\n") as a dict; {} when unreadable."""
    out: dict[str, int] = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if value.strip().isdigit():
                    out[key] = int(value)
    except OSError:
        pass
    return out


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def _failure(what: str, err: OSError) -> OSError:
    """An OSError whose str() names what failed and where: "mkdir /sys/...: Permission denied"."""
    return OSError(err.errno, f"{what}: {os.strerror(err.errno) if err.errno else err}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def sweep_stale(base: str) -> list[str]:
    """Removes the viewbox-* cgroups in `base` whose creator is gone; returns those removed.

    A creator killed with SIGKILL could not remove its cgroups. The kernel
    refuses to remove a cgroup that still holds processes (EBUSY), so only
    empty ones go."""
    removed: list[str] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        match = _NAME.fullmatch(name)
        if match and not _alive(int(match[1])):
            try:
                os.rmdir(os.path.join(base, name))
                removed.append(os.path.join(base, name))
            except OSError:
                pass
    return removed


def _remove(path: str) -> None:
    deadline = time.monotonic() + RMDIR_PATIENCE
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            # EBUSY: a task of the sandbox is still leaving. A cgroup left here is
            # empty soon and swept by a later run once this process is gone.
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)


class _Cgroups:
    """The sandbox's cgroup(s): one directory per controller (the same one in v2)."""

    level: str
    memory_peak_file: str
    memory_current_file: str
    memory_events_file: str

    def __init__(self, dirs: Mapping[str, str]) -> None:
        self.dirs = dict(dirs)
        self.spawn_fds: list[int] = []
        self._sampled_memory = 0
        self._sampled_pids = 0

    def paths(self) -> list[str]:
        return list(dict.fromkeys(self.dirs.values()))

    def file(self, controller: str, name: str) -> str:
        return os.path.join(self.dirs[controller], name)

    def breach(self, limits: LimitsTable) -> str | None:
        """The limit the kernel has had to enforce: "memory" (an OOM kill) or "pids" (a refused fork)."""
        if (limits.memory is not None
                and _read_keyed(self.file("memory", self.memory_events_file)).get("oom_kill", 0) > 0):
            return "memory"
        if limits.pids is not None and _read_keyed(self.file("pids", "pids.events")).get("max", 0) > 0:
            return "pids"
        return None

    def sample(self) -> None:
        """Notes the current figures, for kernels without peak files."""
        self._sampled_memory = max(self._sampled_memory, _read_int(self.file("memory", self.memory_current_file)) or 0)
        self._sampled_pids = max(self._sampled_pids, _read_int(self.file("pids", "pids.current")) or 0)

    def peaks(self) -> tuple[int | None, int | None]:
        memory = _read_int(self.file("memory", self.memory_peak_file))
        pids = _read_int(self.file("pids", "pids.peak"))
        return (memory if memory is not None else self._sampled_memory or None,
                pids if pids is not None else self._sampled_pids or None)

    def procs(self) -> set[int]:
        """The processes in the sandbox's cgroup now."""
        try:
            with open(self.file("pids", "cgroup.procs"), encoding="ascii") as f:
                return {int(line) for line in f if line.strip()}
        except (OSError, ValueError):
            return set()

    def close_spawn_fds(self) -> None:
        for fd in self.spawn_fds:
            os.close(fd)
        self.spawn_fds.clear()

    def remove(self) -> None:
        self.close_spawn_fds()
        for path in reversed(self.paths()):
            _remove(path)

    def spawn_args(self) -> dict[str, Any]:
        raise NotImplementedError


class _CgroupV2(_Cgroups):
    level = LEVEL_CGROUP_V2
    memory_peak_file = "memory.peak"
    memory_current_file = "memory.current"
    memory_events_file = "memory.events"

    @classmethod
    def create(cls, base: str, limits: LimitsTable) -> _CgroupV2:
        _enable_controllers(base)
        path = os.path.join(base, _new_name())
        try:
            os.mkdir(path, 0o755)
        except OSError as err:
            raise _failure(f"mkdir {path}", err) from None
        cgroup = cls({controller: path for controller in CONTROLLERS})
        try:
            cgroup._configure(limits)
            cgroup.spawn_fds.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def _configure(self, limits: LimitsTable) -> None:
        settings = {"memory.oom.group": "1"}  # an OOM kill takes the whole sandbox
        if limits.memory is not None:
            settings["memory.max"] = str(limits.memory)
            if os.path.exists(self.file("memory", "memory.swap.max")):
                settings["memory.swap.max"] = "0"
        if limits.cpu is not None:
            settings["cpu.max"] = f"{_cpu_quota(limits.cpu)} {CPU_PERIOD_US}"
        if limits.pids is not None:
            settings["pids.max"] = str(limits.pids)
        for name, value in settings.items():
            path = self.file(name.split(".")[0], name)
            try:
                _write(path, value)
            except OSError as err:
                raise _failure(f"write {value} to {path}", err) from None

    def spawn_args(self) -> dict[str, Any]:
        return {"cgroup_fd": self.spawn_fds[0]}


def _enable_controllers(base: str) -> None:
    """Makes memory, cpu and pids available to children of `base` (cgroup.subtree_control).

    Fails (EBUSY) when `base` holds processes and is not the root: cgroup v2
    lets only leaves hold processes, and viewbox does not move its caller."""
    control = os.path.join(base, "cgroup.subtree_control")
    try:
        with open(control, encoding="ascii") as f:
            enabled = set(f.read().split())
    except OSError as err:
        raise _failure(f"read {control}", err) from None
    missing = [c for c in CONTROLLERS if c not in enabled]
    if missing:
        text = " ".join(f"+{c}" for c in missing)
        try:
            _write(control, text)
        except OSError as err:
            raise _failure(f"write {text} to {control}", err) from None


class _CgroupV1(_Cgroups):
    level = LEVEL_CGROUP_V1
    memory_peak_file = "memory.max_usage_in_bytes"
    memory_current_file = "memory.usage_in_bytes"
    memory_events_file = "memory.oom_control"

    @classmethod
    def create(cls, bases: Mapping[str, str], limits: LimitsTable) -> _CgroupV1:
        name = _new_name()
        cgroup = cls({controller: os.path.join(bases[controller], name) for controller in CONTROLLERS})
        try:
            for path in cgroup.paths():
                try:
                    os.mkdir(path, 0o755)
                except OSError as err:
                    raise _failure(f"mkdir {path}", err) from None
            cgroup._configure(limits)
            for path in cgroup.paths():
                procs = os.path.join(path, "cgroup.procs")
                try:
                    cgroup.spawn_fds.append(os.open(procs, os.O_WRONLY | os.O_CLOEXEC))
                except OSError as err:
                    raise _failure(f"open {procs}", err) from None
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def _configure(self, limits: LimitsTable) -> None:
        settings: list[tuple[str, str, str]] = []
        if limits.memory is not None:
            settings.append(("memory", "memory.limit_in_bytes", str(limits.memory)))
            # memory plus swap: the same figure, so nothing goes to swap (memsw exists with swap accounting)
            if os.path.exists(self.file("memory", "memory.memsw.limit_in_bytes")):
                settings.append(("memory", "memory.memsw.limit_in_bytes", str(limits.memory)))
        if limits.cpu is not None:
            settings.append(("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US)))
            settings.append(("cpu", "cpu.cfs_quota_us", str(_cpu_quota(limits.cpu))))
        if limits.pids is not None:
            settings.append(("pids", "pids.max", str(limits.pids)))
        for controller, name, value in settings:
            path = self.file(controller, name)
            try:
                _write(path, value)
            except OSError as err:
                raise _failure(f"write {value} to {path}", err) from None

    def spawn_args(self) -> dict[str, Any]:
        return {"cgroup_procs_fds": tuple(self.spawn_fds)}


def _cpu_quota(cores: float) -> int:
    return max(1000, round(cores * CPU_PERIOD_US))


def _new_name() -> str:
    return f"{CGROUP_PREFIX}{os.getpid()}-{next(_serial)}"


def _own_v1_bases(info: CgroupInfo) -> dict[str, str]:
    """controller -> this process's cgroup directory in that v1 hierarchy."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                own[controller] = path
    bases = {}
    for controller in CONTROLLERS:
        base = os.path.normpath(info.v1_mounts[controller] + "/" + own.get(controller, "/"))
        if not os.path.isdir(base):
            raise OSError(2, f"this process's {controller} cgroup {base}: not found")
        bases[controller] = base
    return bases


def cgroup_parents(info: CgroupInfo) -> list[str]:
    """The directories where this process would make its sandboxes' cgroups (and sweeps them):
    its own cgroup v2, and its own cgroup in each mounted v1 hierarchy of memory, cpu and pids."""
    parents = [info.v2_cgroup] if info.v2_cgroup else []
    if set(CONTROLLERS) <= set(info.v1_mounts):
        try:
            parents += _own_v1_bases(info).values()
        except OSError:
            pass
    return list(dict.fromkeys(parents))


def _open_cgroups(limits: LimitsTable, info: CgroupInfo) -> tuple[_Cgroups | None, list[str]]:
    """The sandbox's cgroups at the strongest level available, or None and why each level is not."""
    why_not = []
    needed = set(CONTROLLERS)
    if info.v2_cgroup is None:
        why_not.append("cgroup v2: not mounted")
    elif not needed <= set(info.v2_controllers):
        missing = " ".join(sorted(needed - set(info.v2_controllers)))
        why_not.append(f"cgroup v2: {info.v2_cgroup} lacks the {missing} controller(s)")
    elif not info.v2_writable:
        why_not.append(f"cgroup v2: {info.v2_cgroup} is not writable")
    else:
        sweep_stale(info.v2_cgroup)
        try:
            return _CgroupV2.create(info.v2_cgroup, limits), why_not
        except OSError as err:
            why_not.append(f"cgroup v2: {err.strerror}")
    if not needed <= set(info.v1_mounts):
        missing = " ".join(sorted(needed - set(info.v1_mounts)))
        why_not.append(f"cgroup v1: no {missing} hierarchy mounted")
    else:
        try:
            bases = _own_v1_bases(info)
            for base in dict.fromkeys(bases.values()):
                if not os.access(base, os.W_OK):
                    raise OSError(13, f"{base}: not writable")
                sweep_stale(base)
            return _CgroupV1.create(bases, limits), why_not
        except OSError as err:
            why_not.append(f"cgroup v1: {err.strerror}")
    return None, why_not


# --- the rlimit level's watchdog -------------------------------------------------------

class _ProcessTree:
    """The sandbox's processes, found in the host's /proc: every one descends from its init.

    A pid namespace keeps its orphans (they go to its init), so membership is
    parentage: a pid whose parent is a member is a member, one whose parent is
    known to be outside is outside. Each refresh reads the stat of the pids not
    classified yet; a pid whose parent is not classified yet waits for the next.
    Used when the view has no /proc of its own (see _PidNamespace)."""

    def __init__(self, init: int) -> None:
        self.init = init
        self._members = {init}
        self._others: set[int] = set()

    def members(self) -> set[int]:
        try:
            present = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        except OSError:
            return set(self._members)
        self._members &= present
        self._others &= present
        parents = {}
        for pid in present - self._members - self._others:
            ppid = _ppid(pid)
            if ppid is not None:
                parents[pid] = ppid
        while parents:
            joined = [pid for pid, ppid in parents.items() if ppid in self._members]
            outside = [pid for pid, ppid in parents.items() if ppid == 0 or ppid in self._others]
            if not joined and not outside:
                break
            self._members.update(joined)
            self._others.update(outside)
            for pid in joined + outside:
                del parents[pid]
        return set(self._members)

    def stat(self, pid: int) -> list[bytes]:
        return _stat(pid)

    def status(self, pid: int) -> dict[str, int]:
        return _status(pid)

    def close(self) -> None:
        pass


class _PidNamespace(_ProcessTree):
    """The sandbox's processes as its own /proc lists them: its pid namespace, the init pid 1.

    One directory listing finds them all however fast they come and go. A fork
    bomb keeping every CPU busy leaves viewbox a sliver of CPU time, and a walk
    of the host's /proc classifying each new pid by its parent never catches up
    with one whose processes are replaced faster than it reads them."""

    def __init__(self, proc_fd: int) -> None:
        super().__init__(1)
        self._fd = proc_fd

    @classmethod
    def open(cls, init: int) -> _PidNamespace | None:
        """The /proc of the view whose init is `init` (a host pid), or None when it cannot be opened.

        Reached through the command's root (/proc/PID/root, a child of the init's): the
        init itself is not dumpable, so only root could open its root. The view's /proc
        is a procfs mount the sandbox cannot unmount or cover (it has no capabilities
        and no mount calls), so what it lists is the kernel's."""
        try:
            with open(f"/proc/{init}/task/{init}/children", encoding="ascii") as f:
                children = f.read().split()
        except OSError:
            return None
        for child in children:
            try:
                # O_NOFOLLOW: a view with a writable root must not point the watchdog elsewhere
                return cls(os.open(f"/proc/{child}/root/proc",
                                   os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))
            except OSError:
                continue
        return None

    def members(self) -> set[int]:
        try:
            return {int(name) for name in os.listdir(self._fd) if name.isdigit()}
        except OSError:
            return {self.init}

    def stat(self, pid: int) -> list[bytes]:
        return _stat(pid, self._fd)

    def status(self, pid: int) -> dict[str, int]:
        return _status(pid, self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _sample(tree: _ProcessTree, pids_limit: int | None) -> tuple[int, int]:
    """(tasks, bytes): the sandbox's tasks (its init included) and the anonymous and shared
    memory its processes hold (the init's left out: it shares the caller's pages). Stops at
    the listing when that alone reaches `pids_limit`: (the number of processes, 0)."""
    members = tree.members()
    if pids_limit is not None and len(members) >= pids_limit:
        return len(members), 0
    tasks = memory = 0
    for pid in members:
        status = tree.status(pid)
        tasks += status.get("Threads", 0)
        if pid != tree.init:
            memory += (status.get("RssAnon", 0) + status.get("RssShmem", 0)) * 1024
    return tasks, memory


def _opener(dir_fd: int | None) -> Any:
    return None if dir_fd is None else (lambda path, flags: os.open(path, flags, dir_fd=dir_fd))


def _stat(pid: int, dir_fd: int | None = None) -> list[bytes]:
    """The fields of PROC/PID/stat after the command name (state is [0]); [] when gone. PROC:
    the host's /proc, or the procfs open at `dir_fd`."""
    path = f"{pid}/stat" if dir_fd is not None else f"/proc/{pid}/stat"
    try:
        with open(path, "rb", opener=_opener(dir_fd)) as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _ppid(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if len(fields) > 1 else None


def _status(pid: int, dir_fd: int | None = None) -> dict[str, int]:
    """Threads, RssAnon, RssShmem and VmHWM (KiB) of PROC/PID/status; {} when the process is gone."""
    path = f"{pid}/status" if dir_fd is not None else f"/proc/{pid}/status"
    out = {}
    try:
        with open(path, "rb", opener=_opener(dir_fd)) as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key in (b"Threads", b"RssAnon", b"RssShmem", b"VmHWM"):
                    out[key.decode()] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


# --- one sandbox's session ----------------------------------------------------------

def _from_shipped_policy(origin: Origin | None) -> bool:
    """Whether a value was set by a policy shipped with viewbox, not by the caller (a flag, a
    keyword, a file of theirs)."""
    if origin is None or origin.file is None:
        return False
    from .policy import SHIPPED, shipped_path

    return origin.file in {str(shipped_path(name)) for name in SHIPPED}


class QuotaSession:
    """Holds one sandbox to its [limits] and measures what it used.

        session = QuotaSession.open(policy.limits)     # chooses the level; may fail closed
        plan = session.prepare(plan)                    # the level's rlimits, degraded notes
        child = core.spawn(plan, ..., **session.spawn_args())   (on failure: session.abort())
        session.start(child.pid)
        ... while waiting: if session.check(): kill the sandbox; session.due() says when next
        usage = session.close(kernel_usage, wall_seconds)        # once reaped; removes the cgroups
    """

    def __init__(self, limits: LimitsTable, level: str, cgroups: _Cgroups | None = None,
                 why_no_cgroup: tuple[str, ...] = (), memory_origin: Origin | None = None) -> None:
        self.limits = limits
        self.level = level
        self._memory_origin = memory_origin
        self._own_proc = False  # the view has its own /proc (see start)
        self.limit: str | None = None
        self._cgroups = cgroups
        self._why_no_cgroup = why_no_cgroup
        self._tree: _ProcessTree | None = None
        self._init: int | None = None
        self._started: float | None = None
        self._deadline: float | None = None
        self._next_poll: float | None = None
        self._interval: float | None = None
        self._memory_peak = 0
        self._pids_peak = 0
        self._over_memory = 0  # consecutive watchdog samples over the memory limit
        # what the processes killed with the sandbox had used (see before_kill)
        self._killed: tuple[float, float, int] | None = None

    @classmethod
    def open(cls, limits: LimitsTable, *, memory_origin: Origin | None = None) -> QuotaSession:
        """Chooses the level for `limits` and makes the cgroups it needs. `memory_origin`: where
        the memory limit came from (Policy.origin), which decides whether a watchdog holding it
        is worth a note (see prepare).

        Raises UnavailableLayer when the policy needs a cgroup (require =
        "cgroup", or a cpu limit) and none can be written here."""
        if limits.memory is None and limits.cpu is None and limits.pids is None and limits.require != "cgroup":
            return cls(limits, LEVEL_RLIMIT)
        from .doctor import cgroup_info

        cgroups, why_not = _open_cgroups(limits, cgroup_info())
        if cgroups is not None:
            return cls(limits, cgroups.level, cgroups, memory_origin=memory_origin)
        needs = [f"[limits].cpu = {limits.cpu:g}"] if limits.cpu is not None else []
        if limits.require == "cgroup":
            needs.append('[limits].require = "cgroup"')
        if needs:
            raise UnavailableLayer(
                "cgroups", f"{' and '.join(needs)} {'needs' if len(needs) == 1 else 'need'} a cgroup, "
                f"and none can be made here ({'; '.join(why_not)})",
                "run as root, or from a cgroup v2 subtree delegated to you with memory, cpu and pids in "
                "its cgroup.subtree_control; or drop those settings to run at the rlimit level "
                "(pids and memory held by a watchdog, no cpu limit)")
        return cls(limits, LEVEL_RLIMIT, why_no_cgroup=tuple(why_not), memory_origin=memory_origin)

    def prepare(self, plan: Plan) -> Plan:
        """`plan` with what this level adds: the wall-time limit for the sandbox's init to hold,
        RLIMIT_NPROC, and a note when a limit the caller set is held less firmly.

        The shipped policies' own limits (default's bomb guards) get no note: at the rlimit
        level a watchdog is how every unprivileged run holds them, and a line on every run
        would bury the notes that matter; the level is in the usage and the audit all the same."""
        if self.limits.wall is not None:
            plan = replace(plan, wall_ms=max(1, round(self.limits.wall * 1000)))
        if self.level != LEVEL_RLIMIT:
            return plan
        self._own_proc = any(mount.kind is MountKind.PROC and mount.target == "/proc" for mount in plan.mounts)
        rlimits = plan.rlimits
        if self.limits.pids is not None:
            nproc = self.limits.pids * NPROC_HEADROOM
            rlimits += (Rlimit(resource.RLIMIT_NPROC, nproc, nproc),)
        degraded = plan.degraded
        if self.limits.memory is not None and not _from_shipped_policy(self._memory_origin):
            degraded += (f"memory: no cgroup can be made here, so a watchdog samples the sandbox's memory "
                         f"every {WATCHDOG_POLL * 1000:g} ms and kills it past the limit (rlimit level)",)
        return replace(plan, rlimits=rlimits, degraded=degraded)

    def spawn_args(self) -> dict[str, Any]:
        """Keyword arguments for core.spawn: the cgroup the sandbox starts in."""
        return self._cgroups.spawn_args() if self._cgroups else {}

    def describe(self) -> dict[str, Any]:
        """The level and limits, for the audit start event."""
        out: dict[str, Any] = {"level": self.level, "limits": limits_dict(self.limits)}
        if self._cgroups:
            out["cgroups"] = self._cgroups.paths()
        if self._why_no_cgroup:
            out["no_cgroup"] = list(self._why_no_cgroup)
        return out

    def start(self, init_pid: int) -> None:
        """The sandbox runs: start the clock and the checks."""
        if self._cgroups:
            self._cgroups.close_spawn_fds()
        self._init = init_pid
        self._started = time.monotonic()
        if self.limits.wall is not None:
            # The sandbox's init ends it at the limit itself; this is the backstop.
            self._deadline = self._started + self.limits.wall + WALL_BACKSTOP
        if self.limits.memory is not None or self.limits.pids is not None:
            if self._cgroups:
                self._interval = CGROUP_POLL
            else:
                self._interval = WATCHDOG_POLL
                self._tree = (self._own_proc and _PidNamespace.open(init_pid)) or _ProcessTree(init_pid)
            self._next_poll = self._started

    def postpone(self, seconds: float) -> None:
        """Moves the wall-time backstop on by `seconds` the sandbox spent stopped (job control),
        which its init does not count against [limits].wall either."""
        if self._deadline is not None:
            self._deadline += seconds

    def before_kill(self) -> None:
        """The sandbox is about to be killed: note what its processes have used.

        Processes that die with the pid namespace are reaped by the kernel, not
        by the sandbox's init, so wait4 on the init does not count them: their
        CPU times (with those of the children they reaped) and peak resident
        sets are read from /proc now, just before the kill."""
        if self._init is None or self._killed is not None:
            return
        tree = self._tree or _ProcessTree(self._init)
        pids = self._cgroups.procs() if self._cgroups else tree.members()
        init = self._init if self._cgroups else tree.init
        ticks = os.sysconf("SC_CLK_TCK")
        user = system = 0.0
        hwm = 0
        for pid in pids - {init}:
            fields = tree.stat(pid)
            if len(fields) < 15:
                continue
            # utime, stime, cutime, cstime: fields 14 to 17 of stat(5)
            user += (int(fields[11]) + int(fields[13])) / ticks
            system += (int(fields[12]) + int(fields[14])) / ticks
            hwm = max(hwm, tree.status(pid).get("VmHWM", 0) * 1024)
        self._killed = (user, system, hwm)

    def abort(self) -> None:
        """The spawn failed: remove what was made for it."""
        if self._cgroups:
            self._cgroups.remove()
            self._cgroups = None

    def due(self) -> float | None:
        """Seconds until check() has something to do; None when nothing is watched."""
        if self._started is None or self.limit is not None:
            return None
        times = [t for t in (self._deadline, self._next_poll) if t is not None]
        return max(0.0, min(times) - time.monotonic()) if times else None

    def check(self) -> bool:
        """Runs the checks that are due. True, once, when a limit is breached: kill the sandbox now."""
        if self._started is None or self.limit is not None:
            return False
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            self.limit = "wall"
        elif self._next_poll is not None and self._interval is not None and now >= self._next_poll:
            self._next_poll = now + self._interval
            self.limit = self._poll()
        return self.limit is not None

    def _poll(self) -> str | None:
        if self._cgroups:
            self._cgroups.sample()
            return self._cgroups.breach(self.limits)
        assert self._tree is not None
        tasks, memory = _sample(self._tree, self.limits.pids)
        self._pids_peak = max(self._pids_peak, tasks)
        self._memory_peak = max(self._memory_peak, memory)
        if self.limits.memory is not None:
            # Twice in a row: a command between fork and exec still shows the caller's pages.
            self._over_memory = self._over_memory + 1 if memory > self.limits.memory else 0
            if self._over_memory >= 2:
                return "memory"
        if self.limits.pids is not None and tasks >= self.limits.pids:
            return "pids"
        return None

    def close(self, kernel: KernelUsage, wall_seconds: float) -> Usage:
        """The sandbox has been reaped: its usage, and which limit ended it; removes its cgroups."""
        if kernel.wall_expired:
            # the sandbox's init ended it at the limit, however much later it was collected
            self.limit = self.limit or "wall"
            # (viewbox's clock starts a moment after the init's: the init's is the run's)
            wall_seconds = self.limits.wall if self.limits.wall is not None else wall_seconds
        memory_peak: int | None = self._memory_peak or None
        pids_peak: int | None = self._pids_peak or None
        if self._cgroups:
            if self.limit is None:
                self.limit = self._cgroups.breach(self.limits)
            memory_peak, pids_peak = self._cgroups.peaks()
            self._cgroups.remove()
            self._cgroups = None
        if self._tree:
            self._tree.close()  # (an open /proc of the view keeps its mount and pid namespace)
            self._tree = None
        self._started = None
        user, system, hwm = self._killed or (0.0, 0.0, 0)
        return Usage(level=self.level, wall_seconds=round(wall_seconds, 6),
                     user_seconds=round(kernel.user_seconds + user, 6),
                     system_seconds=round(kernel.system_seconds + system, 6),
                     max_rss_bytes=max(kernel.max_rss_bytes, hwm), memory_peak_bytes=memory_peak,
                     pids_peak=pids_peak, read_bytes=kernel.read_bytes, write_bytes=kernel.write_bytes,
                     limit=self.limit, reason=self._reason(memory_peak, pids_peak, wall_seconds))

    def _reason(self, memory_peak: int | None, pids_peak: int | None, wall_seconds: float) -> str | None:
        limits = self.limits
        if self.limit == "memory" and limits.memory is not None:
            peak = f" (peak {format_bytes(memory_peak)})" if memory_peak else ""
            return f"memory limit {format_bytes(limits.memory)} reached{peak}"
        if self.limit == "pids" and limits.pids is not None:
            peak = f" (peak {pids_peak})" if pids_peak else ""
            return f"pids limit {limits.pids} reached{peak}"
        if self.limit == "wall" and limits.wall is not None:
            return f"wall-time limit {format_seconds(limits.wall)} reached (ran {wall_seconds:.1f} s)"
        return None
