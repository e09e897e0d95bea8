"""The public API: Sandbox, Process, Result, run().

A Sandbox holds a loaded policy (with the caller's overrides); each spawn
compiles it into a Plan for that command and hands it to the C core.
"""
from __future__ import annotations

import fcntl
import functools
import math
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import IO, Any

from . import ask, core
from ._record import field, record
from .errors import SpawnError, TimeoutExpired, UnavailableLayer, ViewboxError
from .quota import LIMIT_EXIT_STATUS, QuotaSession, Usage
from .plan import Plan, RuleAction
from .policy import Policy, compile_policy, load_policy
from .policy.model import normalize
from .views import net

#: As in subprocess (same values): a new pipe for this stream, or /dev/null.
PIPE = -1
DEVNULL = -3

#: seconds a timed-out run's pipes are read for after the kill: their writers are gone, so this
#: only bounds a pipe some other process still holds
DRAIN_SECONDS = 1.0

Stream = int | IO[Any] | None

#: seconds between looks at a stopped sandbox that has limits, to take up their checks again
#: once it is continued
STOPPED_RECHECK = 0.2


@record
class Event:
    """One audit event: what happened, when (Unix time), and its details."""

    kind: str
    time: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        import json  # only for an audit file: not on the plain run path

        return json.dumps({"time": round(self.time, 6), "event": self.kind, **self.details},
                          sort_keys=False)


@record
class Result:
    """What a finished command did. `returncode` follows subprocess: -N when killed by signal N."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes | None
    stderr: bytes | None
    duration: float
    degraded: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    #: what the sandbox used, the enforcement level, and the limit that ended it (usage.limit, .reason)
    usage: Usage | None = None
    #: how many processes were still running when the command ended (a daemon it started, say),
    #: killed with the sandbox; None when the sandbox's init could not count them
    left_running: int | None = None

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    @property
    def exit_status(self) -> int:
        """What `viewbox run` exits with: 124 when a limit ended the run, 128+N when
        killed by signal N, else the command's status."""
        if self.usage is not None and self.usage.limit:
            return LIMIT_EXIT_STATUS
        return 128 - self.returncode if self.returncode < 0 else self.returncode

    def check_returncode(self) -> None:
        if self.returncode:
            import subprocess

            raise subprocess.CalledProcessError(self.returncode, list(self.argv), self.stdout, self.stderr)


@lru_cache(maxsize=None)
def _caller() -> tuple[int, int, bool]:
    """(uid, gid, privileged): privileged means root of the initial user
    namespace, where every id can be mapped into the sandbox."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        with open("/proc/self/uid_map") as f:
            full_range = f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        full_range = False
    return uid, gid, uid == 0 and full_range


class Process:
    """A command running in a sandbox (the handle `Sandbox.spawn` returns).

    `pid` is the host pid of the sandbox's init: signals sent with
    `send_signal` go to it and it forwards them to the command; `kill`
    ends the whole sandbox at once.

    Limits the kernel cannot hold alone (wall time; the cgroup's OOM and pids
    counters; memory at the rlimit level) are checked while `wait`, `poll` or
    `communicate` run: keep waiting on a sandbox that has such limits."""

    def __init__(self, child: core.Child, argv: tuple[str, ...], plan: Plan,
                 stdin: IO[bytes] | None, stdout: IO[bytes] | None, stderr: IO[bytes] | None,
                 audit: _Audit, quota: QuotaSession, sandbox_id: int = 0,
                 host_sockets: net.HostSockets | None = None,
                 network: net.PrivateNetwork | None = None) -> None:
        self._child = child
        self.argv = argv
        self.plan = plan
        self.pid = child.pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._quota = quota
        self.returncode: int | None = None
        self.started = time.monotonic()
        self.duration: float | None = None
        #: set when the command has ended: what the sandbox used (quota.Usage)
        self.usage: Usage | None = None
        self.broker_lost = False
        #: set when the command has ended: processes still running then, killed with it (Result.left_running)
        self.left_running: int | None = None
        self._audit = audit
        self._sandbox_id = sandbox_id
        self._host_sockets = host_sockets
        self._network = network
        #: the resolver of [net].allow's names (viewbox.views.dns.Resolver), set once it runs
        self._resolver: Any = None
        #: the read end of signal.set_wakeup_fd(), or None: a signal arriving just before
        #: `wait` blocks would otherwise wait with its Python handler until the command ends
        self.wakeup_fd: int | None = None
        self._pump: _Pump | None = None
        #: the caller's working directory when the policy names no workdir and the view hides
        #: that directory, so that the command started in "/" instead; else None
        self.hidden_cwd: str | None = None
        #: seconds the sandbox was held stopped (job control) that the wall-time backstop skipped
        self._held = 0.0
        quota.start(child.pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            self._watch()
            if _readable(self._child.status_fd, 0):
                self._collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Waits for the command; raises TimeoutExpired (the sandbox keeps running)."""
        if self.returncode is None:
            if not self._wait_for_end(timeout):
                raise TimeoutExpired(self.argv, timeout)
            self._collect()
        assert self.returncode is not None
        return self.returncode

    def _wait_for_end(self, timeout: float | None) -> bool:
        """Waits up to `timeout` for the command to end, checking the limits meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pause = self._watch()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left is None:
                step = pause
            else:
                step = left if pause is None else min(pause, left)
            if _readable(self._child.status_fd, step, self.wakeup_fd):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _watch(self) -> float | None:
        """Runs the due limit checks, killing the sandbox on a breach; seconds until the next."""
        # Its init holds the stops (whoever sent the signal: this process, or the terminal to
        # the process group the init shares with it); their time does not count, here either.
        stopped, held = self._child.job_stopped()
        if held > self._held:
            self._quota.postpone(held - self._held)
            self._held = held
        if stopped:  # nothing in it runs or grows
            return None if self._quota.due() is None else STOPPED_RECHECK
        if self._quota.check():
            self.kill()
        return self._quota.due()

    def _collect(self) -> None:
        status, kernel_usage = self._child.collect()
        self.duration = time.monotonic() - self.started
        self.returncode = os.waitstatus_to_exitcode(status)
        traffic = net.network_usage(self.plan, kernel_usage, self._network)
        self.usage = self._quota.close(kernel_usage, self.duration)._replace(
            net_rx_bytes=traffic.net_rx_bytes, net_tx_bytes=traffic.net_tx_bytes,
            net_connections_in=traffic.net_connections_in, net_connections_out=traffic.net_connections_out)
        #: the sandbox's init ended it because its broker (path rules) was gone
        self.broker_lost = kernel_usage.broker_lost
        self.left_running = kernel_usage.left_running
        ask.unregister(self._sandbox_id)
        if self._resolver:
            self._resolver.close()
        if self._host_sockets:
            self._host_sockets.cleanup()
        if self._network:
            self._network.cleanup()
        self._audit.end_calls()
        self._audit.emit("exit", returncode=self.returncode, duration=round(self.duration, 6),
                         left_running=self.left_running, usage=self.usage.to_dict())

    def send_signal(self, sig: int) -> None:
        """Sends `sig` to the command (through the sandbox's init, which forwards it).
        SIGTSTP, SIGTTIN and SIGTTOU stop every process of the sandbox instead, and SIGCONT
        continues them: the time in between does not count against the wall-time limit."""
        if self.returncode is None and self._child.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self._child.pidfd, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kills every process of the sandbox (its init dies, and the kernel takes the rest)."""
        if self.returncode is None:
            self._quota.before_kill()
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes | None, bytes | None]:
        """Feeds `input`, reads stdout/stderr to the end, waits; like subprocess. On a timeout,
        TimeoutExpired carries what was read so far (.stdout, .stderr), and calling communicate
        again goes on from there (`input` is then ignored: it was taken the first time)."""
        if self._pump is None:
            self._pump = _Pump(self.stdin, self.stdout, self.stderr, input)
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self._pump.run(deadline, self._watch)
        out, err = self._pump.output()
        if not done:
            raise TimeoutExpired(self.argv, timeout, out, err)
        try:
            self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except TimeoutExpired:
            raise TimeoutExpired(self.argv, timeout, out, err) from None
        return out, err

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.returncode is None:
            self.kill()
            self.wait()
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream:
                stream.close()

    def __del__(self) -> None:
        # A forgotten handle must not leave a sandbox behind.
        if getattr(self, "returncode", 0) is None and self._child.pidfd >= 0:
            self.kill()


class Sandbox:
    """A policy plus overrides, ready to spawn commands.

        with viewbox.Sandbox(policy="python", rw=["/srv/job"]) as box:
            result = box.run(["python3", "job.py"])

    Overrides are the same as the CLI flags: ro, rw, hide, tmpfs (lists of
    paths, tmpfs items "PATH" or "PATH:SIZE"), workdir, hostname, uid, gid,
    net ("none", "private" or "host"), listen (sockets bound on the host and passed in:
    "[NAME=]tcp:ADDRESS:PORT", "[NAME=]unix:PATH"), publish (host ports
    forwarded in: "[ADDRESS:]HOST_PORT:PORT"), allow_net (destinations the sandbox
    may connect to: "ADDRESS[/PREFIX]:PORT" or "NAME:PORT"), dns (where those names are
    resolved: "ADDRESS[:PORT]"), env (a mapping added to the sandbox's
    environment); per-path rules deny, ask, allow (lists of "[ACCESS:]GLOB");
    and the limits: memory and disk (bytes, or "256M"), cpus (cores, 0.5),
    pids, timeout (seconds, or "10m": [limits].wall), where memory, cpus, pids and
    timeout also take "unlimited" (no limit, over the policy's); the clock: time_start (an instant,
    "2009-04-21T12:00:00Z"), time_offset ("-1d"), time_rate (2.0), time_frozen (True).

    `audit` is a file that receives JSON-lines events, or True: either way
    `Result.events` has them, one "syscall" event per interposed call.
    `on_request(request) -> Decision` answers the calls an ask rule holds
    (without it, ask rules deny). `deny_notes` writes one line to this
    process's stderr the first time a connect to a destination, or a lookup of a
    name, is refused ([net].allow), as `viewbox run` does; the audit events say
    it either way ("dns" events for lookups).
    Leaving the `with` block kills whatever it spawned that still runs."""

    def __init__(self, *, policy: str | os.PathLike[str] | Policy | None = None,
                 audit: str | os.PathLike[str] | bool | None = None,
                 on_request: ask.OnRequest | None = None, deny_notes: bool = False,
                 **overrides: Any) -> None:
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy, overrides=overrides)
        self._audit_path = audit
        self._on_request = on_request
        self._deny_note_fd = 2 if deny_notes else -1
        self._processes: list[Process] = []

    def compile(self, argv: Sequence[str]) -> Plan:
        uid, gid, _ = _caller()
        return compile_policy(self.policy, argv=list(argv), cwd=os.getcwd(), host_env=os.environ,
                              landlock_abi=max(0, core.probe_landlock_abi()),
                              caller_uid=uid, caller_gid=gid)

    def spawn(self, argv: Sequence[str], *, stdin: Stream = None, stdout: Stream = None,
              stderr: Stream = None, pass_fds: Mapping[int, int] | None = None) -> Process:
        """Starts `argv` in the sandbox. Streams follow subprocess: None inherits,
        PIPE makes a pipe, DEVNULL, or a file/fd. `pass_fds` maps host fds to
        fd numbers inside; every other fd is closed."""
        argv = tuple(os.fspath(a) for a in argv)
        plan = self.compile(argv)
        resolving = _resolver_module() if plan.net_names else None
        quota = QuotaSession.open(self.policy.limits, memory_origin=self.policy.origin("limits.memory"))
        try:
            plan = quota.prepare(plan)
            audit = _Audit(self._audit_path)
            ends = _Streams(stdin, stdout, stderr)
        except BaseException:
            quota.abort()
            raise
        network: net.PrivateNetwork | None = None
        try:
            host_sockets = net.HostSockets.bind(plan.listen, plan.publish)
            try:
                network = net.PrivateNetwork.create() if plan.private_network else None
            except BaseException:
                host_sockets.release()
                host_sockets.cleanup()
                raise
        except BaseException:
            quota.abort()
            ends.close_all()
            audit.close()
            raise
        listen_fds = host_sockets.child_fds()
        taken = sorted(set(listen_fds.values()) & set((pass_fds or {}).values()))
        if taken:
            quota.abort()
            ends.close_all()
            audit.close()
            host_sockets.release()
            host_sockets.cleanup()
            if network:
                network.cleanup()
            raise ViewboxError(f"pass_fds: fd {taken[0]} inside is taken by a [net].listen socket "
                               f"(they are fds {min(listen_fds.values())}-{max(listen_fds.values())})")
        fds = {**ends.child_fds(), **listen_fds, **(pass_fds or {})}
        uid, gid, privileged = _caller()
        # Before the spawn: the supervisor's per-call events follow it in the audit.
        sandbox_id = core.new_sandbox_id()
        audit.emit("start", sandbox=sandbox_id, argv=list(argv), policy=self.policy.name,
                   layers=_layers(plan, network), degraded=list(plan.degraded), quota=quota.describe())
        asks = bool(self._on_request) and any(rule.action == RuleAction.ASK for rule in plan.path_rules)
        if asks:
            assert self._on_request is not None
            ask.register(sandbox_id, self._on_request)
        try:
            child = core.spawn(plan, fds=fds, outer_uid=uid, outer_gid=gid, map_all_ids=privileged,
                               audit_fd=audit.call_fd(), sandbox_id=sandbox_id, ask_upcall=asks,
                               publish_fds=host_sockets.publish_fds(),
                               netns_fd=network.netns_fd() if network else -1,
                               deny_note_fd=self._deny_note_fd, **quota.spawn_args())
        except SpawnError as e:
            host_sockets.cleanup()
            if network:
                network.cleanup()
            ask.unregister(sandbox_id)
            quota.abort()
            ends.close_all()
            audit.calls_started()  # the calls it made before failing (e.g. the PATH search) are in
            audit.end_calls()
            audit.emit("error", sandbox=sandbox_id, message=str(e), exit_code=e.exit_code)
            audit.close()
            raise _explain(e) from None
        finally:
            ends.close_child_ends()
            host_sockets.release()
            if network:
                network.after_spawn()
        audit.calls_started()
        audit.emit("spawned", sandbox=sandbox_id, pid=child.pid)
        stdin_file, stdout_file, stderr_file = ends.parent_files()
        proc = Process(child, argv, plan, stdin_file, stdout_file, stderr_file, audit=audit, quota=quota,
                       sandbox_id=sandbox_id, host_sockets=host_sockets, network=network)
        if self.policy.process.workdir is None and plan.workdir != normalize(os.getcwd()):
            proc.hidden_cwd = normalize(os.getcwd())
        self._processes.append(proc)
        if resolving and child.resolver_fd >= 0:
            try:
                pin = functools.partial(core.supervisor().pin, sandbox_id)
                proc._resolver = resolving.Resolver.start(
                    child.resolver_fd, plan.net_names, plan.dns_servers, pin,
                    functools.partial(audit.emit, sandbox=sandbox_id), self._deny_note_fd,
                    tuple(rule.network for rule in plan.net_allow))
            except BaseException:
                os.close(child.resolver_fd)
                proc.kill()
                proc.wait()
                raise
        return proc

    def run(self, argv: Sequence[str], *, input: bytes | None = None, capture_output: bool = True,
            timeout: float | None = None, check: bool = False) -> Result:
        """Runs `argv` to completion. stdout/stderr are captured unless
        capture_output is False (then they are inherited). On timeout the
        sandbox is killed and TimeoutExpired raised. A limit of the policy ([limits])
        that ends the run is no error: `Result.usage.limit` names it."""
        out_stream = PIPE if capture_output else None
        proc = self.spawn(argv, stdin=PIPE if input is not None else DEVNULL,
                          stdout=out_stream, stderr=out_stream)
        with proc:
            try:
                out, err = proc.communicate(input, timeout)
            except TimeoutExpired as timed_out:
                proc.kill()
                proc.wait()
                if proc._pump:
                    # every process of the sandbox is gone: what its pipes still hold, then EOF
                    proc._pump.run(time.monotonic() + DRAIN_SECONDS, lambda: None)
                    timed_out.output, timed_out.stderr = proc._pump.output()
                raise
        result = Result(argv=proc.argv, returncode=proc.returncode or 0, stdout=out, stderr=err,
                        duration=proc.duration or 0.0, degraded=proc.plan.degraded,
                        events=tuple(proc._audit.events), usage=proc.usage, left_running=proc.left_running)
        if check:
            result.check_returncode()
        return result

    def close(self) -> None:
        """Kills what this sandbox spawned that still runs."""
        for proc in self._processes:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        self._processes.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(argv: Sequence[str], *, policy: str | os.PathLike[str] | Policy | None = None,
        input: bytes | None = None, capture_output: bool = True, timeout: float | None = None,
        check: bool = False, audit: str | os.PathLike[str] | bool | None = None,
        on_request: ask.OnRequest | None = None, **overrides: Any) -> Result:
    """Runs one command in a fresh sandbox and returns its Result.

        viewbox.run(["python3", "-c", "print(1)"], policy="python").stdout == b"1\\n"
    """
    with Sandbox(policy=policy, audit=audit, on_request=on_request, **overrides) as box:
        return box.run(argv, input=input, capture_output=capture_output, timeout=timeout, check=check)


# --- helpers -------------------------------------------------------------

def _readable(fd: int, timeout: float | None, wakeup_fd: int | None = None) -> bool:
    """Whether `fd` became readable within `timeout`; bytes on `wakeup_fd` (signal.set_wakeup_fd)
    end the wait early, returning False, so that the signal's Python handler runs."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if wakeup_fd is not None:
        poller.register(wakeup_fd, select.POLLIN)
    ready = poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
    if wakeup_fd is not None and any(got == wakeup_fd for got, _ in ready):
        try:
            while os.read(wakeup_fd, 512):
                pass
        except BlockingIOError:
            pass
    return any(got == fd for got, _ in ready)


def _resolver_module() -> Any:
    """viewbox.views.dns, the resolver of [net].allow's names (dnspython: loaded only by a
    run that resolves names)."""
    try:
        from .views import dns
    except ImportError as err:
        raise UnavailableLayer("name resolver", f"[net].allow names domains, which viewbox resolves with the "
                               f"Python package dnspython ({err})", "pip install dnspython") from None
    return dns


def _layers(plan: Plan, network: net.PrivateNetwork | None = None) -> dict[str, Any]:
    own_net = plan.unshare_net or plan.private_network
    layers = {"namespaces": ["user", "mount", "pid", "ipc", "uts", "cgroup"] + (["net"] if own_net else []),
              "landlock_abi": plan.landlock_abi, "seccomp_deny_groups": plan.seccomp_deny_groups}
    if network:
        layers["network"] = network.describe()
    return layers


def _explain(error: SpawnError) -> Exception:
    """A clone that fails for want of user namespaces is a missing layer, not a crash."""
    if "clone3" in error.what:
        from .doctor import probe
        userns = probe().layer("userns")
        if not userns.available:
            return UnavailableLayer("user namespaces", userns.detail, userns.consequence)
        if error.errno in (1, 28, 22):  # EPERM, ENOSPC, EINVAL: the usual userns refusals
            return UnavailableLayer(
                "user namespaces", f"the kernel refused to create them ({os.strerror(error.errno)})",
                "check `viewbox doctor`; unprivileged users need user.max_user_namespaces > 0 "
                "and no AppArmor/sysctl restriction on unprivileged user namespaces")
    return error


class _Streams:
    """The three standard streams of a spawn: parent ends and child ends."""

    def __init__(self, stdin: Stream, stdout: Stream, stderr: Stream) -> None:
        self._child: dict[int, int] = {}
        self._close_in_parent: list[int] = []
        self._parent: list[IO[bytes] | None] = []
        for number, spec in enumerate((stdin, stdout, stderr)):
            self._parent.append(self._open(number, spec))

    def _open(self, number: int, spec: Stream) -> IO[bytes] | None:
        if spec is None:
            self._child[number] = number
            return None
        if spec == DEVNULL:
            fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self._close_in_parent.append(fd)
            self._child[fd] = number
            return None
        if spec == PIPE:
            r, w = os.pipe2(os.O_CLOEXEC)
            child_end, parent_end = (r, w) if number == 0 else (w, r)
            self._close_in_parent.append(child_end)
            self._child[child_end] = number
            return os.fdopen(parent_end, "wb" if number == 0 else "rb", buffering=0)
        fd = spec if isinstance(spec, int) else spec.fileno()
        self._child[fd] = number
        return None

    def child_fds(self) -> dict[int, int]:
        return dict(self._child)

    def parent_files(self) -> tuple[IO[bytes] | None, IO[bytes] | None, IO[bytes] | None]:
        stdin, stdout, stderr = self._parent
        return stdin, stdout, stderr

    def close_child_ends(self) -> None:
        for fd in self._close_in_parent:
            os.close(fd)
        self._close_in_parent.clear()

    def close_all(self) -> None:
        self.close_child_ends()
        for f in self._parent:
            if f:
                f.close()


class _Pump:
    """Writes `data` to stdin and reads stdout and stderr until EOF, without deadlock; with
    poll(), which takes any fd number (select() fails past 1023). It keeps what it read, so
    that a run cut short by a timeout can go on, or be drained, later."""

    def __init__(self, stdin: IO[bytes] | None, stdout: IO[bytes] | None, stderr: IO[bytes] | None,
                 data: bytes | None) -> None:
        self._fds = tuple(f.fileno() if f else None for f in (stdout, stderr))
        self._readers: dict[int, list[bytes]] = {fd: [] for fd in self._fds if fd is not None}  # chunks read
        self._open = set(self._readers)
        self._stdin = stdin
        self._pending = memoryview(data or b"")
        if stdin and not self._pending:
            stdin.close()
            self._stdin = None

    def run(self, deadline: float | None, watch: Callable[[], float | None]) -> bool:
        """Pumps until both outputs end (True) or `deadline` passes (False). `watch()` runs the
        limit checks in between and says when it wants to run again."""
        poller = select.poll()
        for fd in self._open:
            poller.register(fd, select.POLLIN)
        if self._stdin:
            poller.register(self._stdin.fileno(), select.POLLOUT)
        while self._open or self._stdin:
            pause = watch()
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return False
            if pause is not None:
                wait = pause if wait is None else min(wait, pause)
            for fd, _ in poller.poll(None if wait is None else math.ceil(wait * 1000)):
                if fd in self._open:
                    block = os.read(fd, 65536)
                    if block:
                        self._readers[fd].append(block)
                    else:
                        self._open.discard(fd)
                        poller.unregister(fd)
                elif self._stdin and fd == self._stdin.fileno():
                    try:  # at most PIPE_BUF: POLLOUT promises that much room, so it cannot block
                        sent = os.write(fd, self._pending[:select.PIPE_BUF])
                        self._pending = self._pending[sent:]
                    except BrokenPipeError:
                        self._pending = self._pending[:0]
                    if not self._pending:
                        poller.unregister(fd)
                        self._stdin.close()
                        self._stdin = None
        return True

    def output(self) -> tuple[bytes | None, bytes | None]:
        """What was read from stdout and stderr so far (None for a stream not captured)."""
        out, err = (None if fd is None else b"".join(self._readers[fd]) for fd in self._fds)
        return out, err


class _Audit:
    """A process's events: viewbox's own (start, spawned, exit, error) and the
    supervisor's, one per interposed call, which arrive on a pipe and are
    read by a thread. Kept in `events`, and appended to the audit file, if any."""

    def __init__(self, path: str | os.PathLike[str] | bool | None) -> None:
        self.events: list[Event] = []
        self._enabled = bool(path)
        self._file = open(path, "a", encoding="utf-8", buffering=1) if path and path is not True else None
        self._lock = threading.Lock()
        self._read_end = self._write_end = -1
        self._reader: threading.Thread | None = None

    def emit(self, kind: str, **details: Any) -> None:
        event = Event(kind, time.time(), details)
        with self._lock:
            self.events.append(event)
            if self._file:
                self._file.write(event.to_json() + "\n")
        if kind in ("exit", "error"):
            self.close()

    def call_fd(self) -> int:
        """Where the supervisor writes its per-call events (-1: not audited)."""
        if not self._enabled:
            return -1
        self._read_end, self._write_end = os.pipe2(os.O_CLOEXEC)
        try:  # room for bursts while this process is busy elsewhere
            fcntl.fcntl(self._write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        return self._write_end

    def calls_started(self) -> None:
        """The supervisor has its own copy of the pipe now: read until it closes it."""
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1
            self._reader = threading.Thread(target=self._read_calls, name="viewbox-audit", daemon=True)
            self._reader.start()

    def end_calls(self) -> None:
        """Waits for the last per-call events (the supervisor closes its end once
        every process of the sandbox is gone)."""
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1
        if self._reader:
            self._reader.join(timeout=10)
            self._reader = None
        elif self._read_end >= 0:
            os.close(self._read_end)
            self._read_end = -1

    def _read_calls(self) -> None:
        import json

        pending = b""
        with open(self._read_end, "rb", buffering=0) as pipe:
            self._read_end = -1
            while chunk := pipe.read(1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    record = json.loads(line)
                    event = Event(record.pop("event"), record.pop("time"), record)
                    with self._lock:
                        self.events.append(event)
                        if self._file:
                            self._file.write(line.decode() + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None
