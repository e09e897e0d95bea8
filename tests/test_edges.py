"""Runtime and CLI edges: many open fds, timeouts that keep their output, processes left
running when the command exits, a broken pipe, job control, a hidden working directory, and
the one size of the seccomp program."""
from __future__ import annotations

import errno
import json
import os
import pathlib
import pty
import re
import select
import signal
import subprocess
import textwrap
import time

import pytest

import viewbox
from conftest import INSIDE_PYTHON, TESTS, Caller

REPO = TESTS.parent

# --- a caller holding more than 1,024 fds -----------------------------------------------

#: Opens 1,100 fds first, so that every fd viewbox makes afterwards (pipes, the supervisor's
#: request fd, the resolver's socket) is past 1023, where select() fails.
MANY_FDS = textwrap.dedent("""\
    import json, os, resource, sys, viewbox
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    assert max(held) > 1100
    out = {}
    r = viewbox.run(["echo", "hi"], timeout=30)
    out["plain"] = [r.returncode, r.stdout.decode()]
    asked = []
    def on_request(request):
        asked.append(request.path)
        return viewbox.Decision.ALLOW_ONCE
    # capture_output=False: the only wait for an fd here is the ask dispatcher's
    r = viewbox.run(["sh", "-c", "exec cat /etc/hostname >/dev/null"], ask=["/etc/hostname"],
                    on_request=on_request, capture_output=False, timeout=30)
    out["ask"] = [r.returncode, asked]
    r = viewbox.run(["getent", "hosts", "denied.invalid"], allow_net=["allowed.invalid:443"], audit=True,
                    timeout=30)
    out["dns"] = [r.returncode, [e.details["name"] for e in r.events if e.kind == "dns"]]
    print(json.dumps(out))
""")


def test_a_caller_holding_over_1024_fds_runs_commands(as_user: Caller) -> None:
    done = as_user.python(["-c", MANY_FDS], timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["plain"] == [0, "hi\n"]
    assert out["ask"] == [0, ["/etc/hostname"]]
    # getent's lookups reached viewbox's resolver (A and AAAA), which refused them
    assert out["dns"][0] == 2 and set(out["dns"][1]) == {"denied.invalid"}


# --- TimeoutExpired keeps the output --------------------------------------------------

def test_timeout_carries_the_partial_output() -> None:
    with pytest.raises(viewbox.TimeoutExpired) as info:
        viewbox.run(["sh", "-c", "echo started; echo warming >&2; sleep 60"], timeout=1.5)
    assert info.value.stdout == info.value.output == b"started\n"
    assert info.value.stderr == b"warming\n"


def test_timeout_keeps_output_written_just_before_the_kill() -> None:
    # 100 KiB is more than a pipe holds: some of it is read only after the kill
    with pytest.raises(viewbox.TimeoutExpired) as info:
        viewbox.run(["sh", "-c", "head -c 102400 /dev/zero; sleep 60"], timeout=1.5)
    assert info.value.stdout == b"\0" * 102400


def test_communicate_after_a_timeout_goes_on_from_there() -> None:
    with viewbox.Sandbox() as box:
        proc = box.spawn(["sh", "-c", "echo one; sleep 1.5; echo two"], stdout=viewbox.PIPE)
        with pytest.raises(viewbox.TimeoutExpired) as info:
            proc.communicate(timeout=0.5)
        assert info.value.stdout == b"one\n"
        out, err = proc.communicate(timeout=30)
        assert (out, err, proc.returncode) == (b"one\ntwo\n", None, 0)


# --- processes still running when the command exits -------------------------------------

def test_cli_says_how_many_processes_were_left_running(as_user: Caller) -> None:
    # a program that daemonizes: two children, one in a session of its own, and the command exits 0
    done = as_user.run(["--", "sh", "-c", "sleep 60 & (setsid sleep 60 &); exit 0"])
    assert done.returncode == 0
    assert done.stderr == ("viewbox: the command exited with 2 processes of the sandbox still running; "
                           "they were killed\n")
    done = as_user.run(["--", "sh", "-c", "sleep 60 & exit 3"])
    assert (done.returncode, done.stderr) == (3, "viewbox: the command exited with 1 process of the sandbox "
                                                 "still running; it was killed\n")
    assert as_user.run(["--", "sh", "-c", "sleep 0.1 & wait"]).stderr == ""


@pytest.mark.parametrize("overrides", [{}, {"deny": ["/etc/shadow"]}, {"time_rate": 2.0}],
                         ids=["plain", "broker", "traced"])
def test_api_counts_what_was_left_running(overrides: dict[str, object]) -> None:
    # the count is the init's: its broker (path rules) is not among them, nor threads of the
    # traced processes (time view), nor a child that had already exited (a zombie)
    result = viewbox.run(["sh", "-c", "sleep 60 & (setsid sleep 60 &); exit 0"], audit=True, timeout=30, **overrides)
    assert result.left_running == 2
    assert [e.details["left_running"] for e in result.events if e.kind == "exit"] == [2]
    result = viewbox.run(["sh", "-c", "sleep 0.1 & exec sleep 1"], timeout=30, **overrides)
    assert result.left_running == 0
    threads = "import threading, time; [threading.Thread(target=time.sleep, args=(60,)).start() for _ in range(3)]"
    result = viewbox.run(["sh", "-c", f"{INSIDE_PYTHON} -c '{threads}' & sleep 1; exit 0"], timeout=30, **overrides)
    assert result.left_running == 1


# --- job control ------------------------------------------------------------------------

class _Terminal:
    """An interactive bash (job control on) on a pseudo-terminal, as `caller`."""

    def __init__(self, caller: Caller) -> None:
        env = {**caller.viewbox_env(None), "PS1": "$ ", "TERM": "dumb"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: only exec from here
            try:
                os.chdir("/")
                if caller.uid:
                    os.setgroups([])
                    os.setgid(caller.gid)
                    os.setuid(caller.uid)
                os.execve("/bin/bash", ["bash", "--norc", "--noprofile", "-i"], env)
            finally:
                os._exit(127)
        self.seen = b""
        self.read_for(0.5)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def read_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if _readable(self.fd, left):
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # the shell is gone
                    return

    def wait_for(self, pattern: bytes, seconds: float) -> re.Match[bytes]:
        end = time.monotonic() + seconds
        while not re.search(pattern, self.seen) and time.monotonic() < end:
            self.read_for(0.1)
        found = re.search(pattern, self.seen)
        assert found, self.seen.decode(errors="replace")
        return found

    def close(self) -> None:
        os.close(self.fd)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def _readable(fd: int, seconds: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


def _lines(path: pathlib.Path) -> int:
    try:
        return len(path.read_text().split())
    except FileNotFoundError:
        return 0


def test_ctrl_z_stops_the_sandbox_and_fg_continues_it(as_user: Caller, shared_dir: pathlib.Path) -> None:
    ticks = shared_dir / "ticks"
    # about 2 s of work; the run is stopped for longer than its 5 s wall-time limit leaves
    loop = f"i=0; while [ $i -lt 20 ]; do echo $i >> {ticks}; i=$((i+1)); sleep 0.1; done"
    viewbox_run = " ".join(as_user.viewbox_argv(["run"]))
    terminal = _Terminal(as_user)
    try:
        terminal.type(f"{viewbox_run} --rw {shared_dir} --timeout 5s -- sh -c '{loop}'\n")
        end = time.monotonic() + 30
        while _lines(ticks) < 3 and time.monotonic() < end:
            time.sleep(0.05)
        terminal.type("\x1a")  # Ctrl-Z
        terminal.wait_for(rb"Stopped", 10)
        time.sleep(0.5)  # a tick under way lands
        before = _lines(ticks)
        time.sleep(5)
        assert _lines(ticks) == before < 20  # nothing of the sandbox ran meanwhile
        terminal.type("fg; echo status=$?\n")
        assert terminal.wait_for(rb"status=(\d+)", 30)[1] == b"0"  # not 124: the limit waited
        assert _lines(ticks) == 20
    finally:
        terminal.close()


def test_ctrl_z_of_a_program_using_the_api_stops_its_sandbox(as_user: Caller, shared_dir: pathlib.Path) -> None:
    # The terminal stops the program's process group, which the sandbox's init shares: the init
    # stops the sandbox, and neither its wall-time limit nor the program's backstop of it
    # counts the time stopped.
    ticks = shared_dir / "ticks"
    loop = f"i=0; while [ $i -lt 20 ]; do echo $i >> {ticks}; i=$((i+1)); sleep 0.1; done"
    program = shared_dir / "program.py"
    program.write_text(textwrap.dedent(f"""\
        import viewbox
        result = viewbox.Sandbox(rw=[{str(shared_dir)!r}], timeout="4s").run(["sh", "-c", {loop!r}])
        print("result", result.returncode, result.usage.limit)
    """))
    python = as_user.viewbox_argv([])[0]
    terminal = _Terminal(as_user)
    try:
        terminal.type(f"{python} {program}\n")
        end = time.monotonic() + 30
        while _lines(ticks) < 3 and time.monotonic() < end:
            time.sleep(0.05)
        terminal.type("\x1a")  # Ctrl-Z
        terminal.wait_for(rb"Stopped", 10)
        time.sleep(0.5)
        before = _lines(ticks)
        time.sleep(6)  # past the limit, and past the backstop's second after it
        assert _lines(ticks) == before < 20
        terminal.type("fg\n")
        assert terminal.wait_for(rb"result (\S+) (\S+)", 30).groups() == (b"0", b"None")
        assert _lines(ticks) == 20
    finally:
        terminal.close()


@pytest.mark.parametrize("overrides", [{}, {"deny": ["/etc/shadow"]}, {"time_rate": 2.0}],
                         ids=["plain", "broker", "traced"])
def test_api_stop_signals_stop_every_process_and_sigcont_continues(shared_dir: pathlib.Path,
                                                                   overrides: dict[str, object]) -> None:
    # the broker (path rules) must go on serving, and the init tracing (time view) must let
    # the stop hold
    ticks, daemon_ticks = shared_dir / "ticks", shared_dir / "daemon"
    tick = "while :; do echo . >> {}; sleep 0.05; done"
    script = f"(setsid sh -c '{tick.format(daemon_ticks)}' &); {tick.format(ticks)}"
    with viewbox.Sandbox(rw=[str(shared_dir)], timeout="3s", **overrides) as box:
        proc = box.spawn(["sh", "-c", script])
        time.sleep(1)
        proc.send_signal(signal.SIGTSTP)
        time.sleep(0.5)
        counts = _lines(ticks), _lines(daemon_ticks)
        assert min(counts) > 0
        assert proc.poll() is None
        time.sleep(4)  # past the wall-time limit: stopped time does not count
        assert (_lines(ticks), _lines(daemon_ticks)) == counts
        assert proc.poll() is None
        proc.send_signal(signal.SIGCONT)
        time.sleep(1)
        assert _lines(ticks) > counts[0] and _lines(daemon_ticks) > counts[1]
        proc.wait(timeout=30)  # the limit ends it, counting only the time it ran
    assert proc.usage is not None and proc.usage.limit == "wall"
    assert proc.duration is not None and proc.duration > 7


# --- the CLI into a closed pipe --------------------------------------------------------

def _into_closed_pipe(caller: Caller, args: list[str]) -> subprocess.CompletedProcess[str]:
    """`viewbox ARGS` with stdout a pipe nobody reads any more (as after `| head` exited)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return caller.cli(args, stdout=write_end, stderr=subprocess.PIPE, capture_output=False)
    finally:
        os.close(write_end)


def test_show_into_a_closed_pipe_exits_quietly(as_user: Caller, world_dir: pathlib.Path) -> None:
    # as a tool that SIGPIPE ended: 141, and no traceback
    done = _into_closed_pipe(as_user, ["show", "--syscalls"])
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, "")
    # a short output fails only when flushed at the end: the same
    policy = world_dir / "policy.toml"
    policy.write_text((REPO / "policies" / "default.toml").read_text())
    done = _into_closed_pipe(as_user, ["check", str(policy)])
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, "")
    # as a shell runs it: head takes the first line and exits, whatever viewbox still writes
    viewbox_show = " ".join(as_user.viewbox_argv(["show", "--syscalls", "--time-rate", "2"]))
    done = as_user.native(["sh", "-c", f"{viewbox_show} | head -n 1"], env=as_user.viewbox_env(None))
    assert (done.returncode, done.stderr, len(done.stdout.splitlines())) == (0, "", 1)


# --- exit status 2 --------------------------------------------------------------------

@pytest.mark.parametrize("args", [["run", "--no-such-flag", "--", "true"], ["run", "--memory"],
                                  ["show", "--no-such-flag"], ["check"], ["doctor", "extra"],
                                  ["learn", "--", "true"], ["no-such-verb"]])
def test_a_wrong_command_line_exits_2(args: list[str]) -> None:
    done = Caller("root").cli(args)
    assert done.returncode == 2 and "usage: viewbox" in done.stderr, done


def test_exit_status_2_is_in_the_tables() -> None:
    help_text = " ".join(Caller("root").cli(["--help"]).stdout.split())
    assert "exits with 2 when its command line is wrong" in help_text
    readme = (REPO / "README.md").read_text()
    table = readme.split("Exit status of `viewbox run`:", 1)[1].split("\n\n", 2)[1]
    assert re.search(r"^\| 2 \| the command line is wrong", table, re.MULTILINE), table


# --- a hidden working directory ---------------------------------------------------------

def test_cli_says_when_the_current_directory_is_hidden(as_user: Caller, world_dir: pathlib.Path) -> None:
    # /tmp is the sandbox's own, so the caller's directory under it is not there
    done = as_user.run(["--", "pwd"], cwd=world_dir)
    assert done.returncode == 0 and done.stdout == "/\n"
    assert done.stderr == (f"viewbox: the current directory {world_dir} is hidden in the view: "
                           f"the command starts in /\n")
    # shown, or a workdir asked for: nothing to say
    done = as_user.run(["--ro", str(world_dir), "--", "pwd"], cwd=world_dir)
    assert (done.stdout, done.stderr) == (f"{world_dir}\n", "")
    done = as_user.run(["--workdir", "/tmp", "--", "pwd"], cwd=world_dir)
    assert (done.stdout, done.stderr) == ("/tmp\n", "")


def test_api_exposes_the_hidden_current_directory(world_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(world_dir)
    with viewbox.Sandbox() as box:
        proc = box.spawn(["pwd"], stdout=viewbox.PIPE)
        assert proc.communicate(timeout=30)[0] == b"/\n"
        assert proc.hidden_cwd == str(world_dir)
    with viewbox.Sandbox(ro=[str(world_dir)]) as box:
        proc = box.spawn(["true"])
        proc.wait(timeout=30)
        assert proc.hidden_cwd is None


# --- one size for the seccomp program -----------------------------------------------------

def test_the_seccomp_program_has_one_size_limit() -> None:
    from viewbox import core

    cap = core.lib.VB_SECCOMP_MAX_INSNS  # from the C header, through cffi
    assert 0 < cap <= 4096  # BPF_MAXINSNS
    # the largest program viewbox builds (every group, every family, every trap) fits, and a
    # sandbox that needs every family and trap runs with it
    every_family = (core.lib.VB_FAMILY_FS | core.lib.VB_FAMILY_EXEC | core.lib.VB_FAMILY_NET
                    | core.lib.VB_FAMILY_CLOCK)
    every_trap = (core.lib.VB_TRAP_CLOCK_REAL | core.lib.VB_TRAP_CLOCK_MONO | core.lib.VB_TRAP_DEADLINES
                  | core.lib.VB_TRAP_TIMEOUTS | core.lib.VB_TRAP_STAMPS)
    largest = len(core.seccomp_program(core.lib.VB_GROUP_ALL, every_family, every_trap)) // 8
    assert 0 < largest <= cap
    result = viewbox.run(["true"], deny=["/etc/shadow"], allow_net=["127.0.0.1:9"], time_rate=2.0, timeout=60)
    assert result.returncode == 0, result.stderr
    # the capacity is checked: one instruction short, the build refuses rather than overruns
    buf = core.ffi.new("char[]", 8 * cap)
    assert core.lib.vb_seccomp_build(core.lib.VB_GROUP_ALL, every_family, every_trap, buf, largest - 1) \
        == -errno.ENOSPC
