"""`viewbox run` and the Python API, as a user relies on them: the view
(files, processes, hostname, network), exit status and signals, the
environment, errors, and the API's handles. CLI tests run as root and as
user nobody (the `as_user` fixture); where the point is that the sandbox
changes something, the same command runs natively first to show it works
there."""
from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

import viewbox
from viewbox.cli import FORWARDED
from conftest import (INSIDE_PYTHON, Caller, live_processes, mountinfo, stop, unique,
                      wait_until)


def py(code: str) -> list[str]:
    """`-- python3 -c CODE` for `viewbox run`: a command that prints JSON for the test."""
    return ["--", INSIDE_PYTHON, "-c", code]


def one_line_error(stderr: str) -> str:
    """The single `viewbox: ...` line a failed setup prints (and nothing else)."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line of error, got {stderr!r}"
    assert lines[0].startswith("viewbox: "), lines[0]
    return lines[0]


def _pid_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def sandbox_members(marker: str) -> tuple[str | None, list[int]]:
    """(pid namespace, its live processes) of the sandbox whose viewbox command line holds
    `marker` (the command's own argv has it too), in a pid namespace of its own."""
    own_ns = _pid_ns("self")
    namespaces = {_pid_ns(pid) for pid in live_processes(marker)} - {own_ns, None}
    if len(namespaces) != 1:
        return None, []
    (ns,) = namespaces
    return ns, members_of(ns)


def members_of(ns: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and _pid_ns(pid) == ns:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                        pids.append(int(pid))
            except (OSError, IndexError):
                pass
    return sorted(pids)


# --- 1. the default policy ----------------------------------------------------------

def test_default_policy_runs_id_hostname_ls(as_user: Caller) -> None:
    done = as_user.run(["--", "sh", "-c", "id; hostname; ls /"])
    assert done.returncode == 0, done.stderr
    id_line, hostname, *listing = done.stdout.splitlines()
    assert id_line.startswith(f"uid={as_user.uid}(") and f"gid={as_user.gid}(" in id_line
    assert hostname == "viewbox"
    assert {"usr", "etc", "proc", "tmp", "dev"} <= set(listing)


# --- 2. files: hidden, host /tmp, read-only, read-write -------------------------------

def test_hidden_directory_is_empty_inside(as_user: Caller, world_dir: pathlib.Path) -> None:
    secret = world_dir / "hidden" / "secret.txt"
    secret.parent.mkdir(mode=0o755)
    secret.write_text("top secret\n")
    secret.chmod(0o644)
    assert as_user.native(["cat", str(secret)]).stdout == "top secret\n"  # readable without viewbox

    done = as_user.run(["--ro", str(world_dir), "--hide", str(secret.parent), "--",
                        "sh", "-c", f'ls -A "{secret.parent}" && echo listed; cat "{secret}"'])
    assert done.stdout == "listed\n"
    assert done.returncode != 0
    assert "No such file or directory" in done.stderr
    assert "top secret" not in done.stdout + done.stderr


def test_root_home_is_hidden(as_user: Caller) -> None:
    assert os.listdir("/root"), "this test needs something in the host's /root"
    done = as_user.run(["--", "sh", "-c", "ls -A /root; echo end"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == "end\n"


def test_host_tmp_file_is_not_visible(as_user: Caller) -> None:
    marker = pathlib.Path("/tmp") / unique("viewbox-host-tmp")
    marker.write_text("host tmp content\n")
    marker.chmod(0o644)
    try:
        assert as_user.native(["cat", str(marker)]).stdout == "host tmp content\n"
        done = as_user.run(["--", "sh", "-c", f'cat "{marker}"; ls -A /tmp; echo end'])
        assert "host tmp content" not in done.stdout
        assert "No such file or directory" in done.stderr
        assert done.stdout == "end\n"  # /tmp inside is a fresh, empty tmpfs
    finally:
        marker.unlink()


def test_read_only_paths_refuse_writes(as_user: Caller, shared_dir: pathlib.Path) -> None:
    native = shared_dir / "written-natively"
    assert as_user.native(["sh", "-c", f'echo x > "{native}"']).returncode == 0  # the dir is 0777
    targets = [shared_dir / "from-inside", pathlib.Path("/usr/viewbox-write-test"),
               pathlib.Path("/etc/viewbox-write-test")]
    code = ("import json, os, sys\nout = {}\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)); out[path] = 0\n"
            "    except OSError as e:\n        out[path] = e.errno\n"
            "print(json.dumps(out))")
    done = as_user.run(["--ro", str(shared_dir), *py(code), *map(str, targets)])
    assert done.returncode == 0, done.stderr
    for path, err in json.loads(done.stdout).items():
        assert err in (errno.EROFS, errno.EACCES), f"{path}: {errno.errorcode.get(err, err)}"
    for path in targets:
        assert not path.exists()


def test_rw_path_writes_reach_the_host(as_user: Caller, shared_dir: pathlib.Path) -> None:
    out = shared_dir / "out.txt"
    done = as_user.run(["--rw", str(shared_dir), "--", "sh", "-c", f'echo "from the sandbox" > "{out}"'])
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "from the sandbox\n"
    assert (out.stat().st_uid, out.stat().st_gid) == (as_user.uid, as_user.gid)


def test_tmp_is_private_and_writable(as_user: Caller) -> None:
    name = unique("viewbox-private-tmp")
    done = as_user.run(["--", "sh", "-c", f"echo inside > /tmp/{name} && cat /tmp/{name}"])
    assert (done.returncode, done.stdout) == (0, "inside\n"), done.stderr
    assert not os.path.exists(f"/tmp/{name}")


def test_tmpfs_size_is_enforced(as_user: Caller, world_dir: pathlib.Path) -> None:
    done = as_user.run(["--tmpfs", f"{world_dir}:1M", "--", "sh", "-c",
                        f'head -c 2000000 /dev/zero > "{world_dir}/fill"; echo "status $?"; '
                        f'echo ok > "{world_dir}/small" && cat "{world_dir}/small"'])
    assert "No space left on device" in done.stderr
    assert done.stdout.splitlines()[0] != "status 0"
    assert os.listdir(world_dir) == []  # a tmpfs of the sandbox's own


def test_tmpfs_on_a_path_missing_on_the_host(as_user: Caller) -> None:
    # The README's own example: `viewbox run --tmpfs /scratch:512M -- ./fill-scratch`.
    target = "/" + unique("scratch")
    done = as_user.run(["--tmpfs", f"{target}:1M", "--", "sh", "-c", f'echo ok > "{target}/f" && cat "{target}/f"'])
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
    assert not os.path.exists(target)


def test_stdio_files_can_be_reopened_by_path(as_user: Caller, shared_dir: pathlib.Path) -> None:
    # `echo x > /dev/stderr` reopens /proc/self/fd/2: a host file outside the view.
    out, err = shared_dir / "out.txt", shared_dir / "err.txt"
    for path in (out, err):  # writable by the caller natively, as reopening needs
        path.touch(mode=0o666)
        path.chmod(0o666)
    with open(out, "w") as stdout, open(err, "w") as stderr:
        done = as_user.run(["--", "sh", "-c", "echo to-stdout > /dev/stdout; echo to-stderr > /dev/stderr"],
                           stdout=stdout, stderr=stderr, capture_output=False)
    assert done.returncode == 0, err.read_text()
    assert (out.read_text(), err.read_text()) == ("to-stdout\n", "to-stderr\n")


def test_reopening_stdin_does_not_widen_its_access(as_user: Caller, world_dir: pathlib.Path) -> None:
    # stdin was opened read-only by the caller: reopening it by path for writing must fail.
    data = world_dir / "input.txt"
    data.write_text("original\n")
    data.chmod(0o666)
    with open(data) as stdin:
        done = as_user.run(["--", "sh", "-c", "echo tampered >> /dev/stdin; cat /dev/stdin"], stdin=stdin)
    assert "Permission denied" in done.stderr
    assert data.read_text() == "original\n"


def test_workdir(as_user: Caller) -> None:
    assert as_user.run(["--workdir", "/etc", "--", "pwd"]).stdout == "/etc\n"
    # by default the caller's directory, when the view shows it ...
    assert as_user.run(["--", "pwd"], cwd="/usr/share").stdout == "/usr/share\n"


def test_default_workdir_falls_back_to_root_when_hidden() -> None:
    # ... else "/" (root's own /root is hidden by the default policy)
    assert Caller("root").run(["--", "pwd"], cwd="/root").stdout == "/\n"


def test_uid_and_gid_inside(as_user: Caller) -> None:
    done = as_user.run(["--uid", "1234", "--gid", "4321", "--", "sh", "-c", "id -u; id -g"])
    assert (done.returncode, done.stdout) == (0, "1234\n4321\n"), done.stderr


# --- 3. processes and hostname --------------------------------------------------------

def test_proc_shows_only_the_sandbox(as_user: Caller) -> None:
    code = ("import json, os; print(json.dumps(sorted(int(p) for p in os.listdir('/proc') if p.isdigit())))")
    done = as_user.run(py(code))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [1, 2]  # the init and the command itself


def test_ps_shows_only_the_sandbox(as_user: Caller) -> None:
    if not os.path.exists("/usr/bin/ps"):
        pytest.skip("procps is not installed")
    done = as_user.run(["--", "sh", "-c", "ps -eo pid=,comm="])
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [pid for pid, _ in rows] == ["1", "2", "3"]
    assert [comm for _, comm in rows[1:]] == ["sh", "ps"]


def test_hostname(as_user: Caller) -> None:
    host = socket.gethostname()
    done = as_user.run(["--hostname", "box-under-test", "--", "sh", "-c", "hostname; cat /proc/sys/kernel/hostname"])
    assert (done.returncode, done.stdout) == (0, "box-under-test\nbox-under-test\n"), done.stderr
    assert socket.gethostname() == host


# --- 4. network -------------------------------------------------------------------------

CONNECT = ("import json, socket, sys, time\nout = {}\n"
           "for target in sys.argv[1:]:\n"
           "    host, port = target.rsplit(':', 1)\n"
           "    start = time.monotonic()\n"
           "    try:\n"
           "        socket.create_connection((host, int(port)), timeout=3).close(); out[target] = ['ok']\n"
           "    except socket.timeout:\n        out[target] = ['timeout']\n"
           "    except OSError as e:\n        out[target] = [e.errno]\n"
           "    out[target].append(time.monotonic() - start)\n"
           "print(json.dumps(out))")


def test_host_loopback_service_is_unreachable(as_user: Caller) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)
        target = f"127.0.0.1:{server.getsockname()[1]}"
        native = as_user.native([INSIDE_PYTHON, "-c", CONNECT, target])
        assert json.loads(native.stdout)[target][0] == "ok"  # reachable without viewbox
        server.accept()[0].close()

        done = as_user.run([*py(CONNECT), target])
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[target][0] == errno.ECONNREFUSED  # the sandbox's own lo
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()


def test_outside_addresses_fail_fast(as_user: Caller) -> None:
    targets = ["10.0.0.1:80", "192.0.2.1:80", "1.1.1.1:443"]
    done = as_user.run([*py(CONNECT), *targets])
    assert done.returncode == 0, done.stderr
    for target, (err, seconds) in json.loads(done.stdout).items():
        assert err == errno.ENETUNREACH, f"{target}: {err}"  # no route at all: nothing is sent
        assert seconds < 1, target


def test_only_loopback_interface(as_user: Caller) -> None:
    done = as_user.run(["--", "cat", "/proc/net/dev"])
    assert done.returncode == 0, done.stderr
    names = [line.split(":")[0].strip() for line in done.stdout.splitlines()[2:]]
    assert names == ["lo"]


def test_ip_link_lists_only_loopback(as_user: Caller) -> None:
    if not os.path.exists("/usr/sbin/ip") and not os.path.exists("/usr/bin/ip"):
        pytest.skip("iproute2 is not installed")
    done = as_user.run(["--", "ip", "-o", "link"])
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[1].strip() for line in done.stdout.splitlines()] == ["lo"]
    assert ",UP" in done.stdout  # and it is up


def test_loopback_works_inside(as_user: Caller) -> None:
    code = ("import socket, threading\n"
            "s = socket.create_server(('127.0.0.1', 0))\n"
            "threading.Thread(target=lambda: s.accept()[0].sendall(b'hello'), daemon=True).start()\n"
            "c = socket.create_connection(s.getsockname(), timeout=3)\n"
            "print(c.recv(5).decode())")
    done = as_user.run(py(code))
    assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr


# --- 5. exit status and signals --------------------------------------------------------

@pytest.mark.parametrize("script, status", [("exit 7", 7), ("exit 0", 0), ("kill -9 $$", 137),
                                            ("kill -TERM $$", 143)])
def test_exit_status_passes_through(as_user: Caller, script: str, status: int) -> None:
    assert as_user.run(["--", "sh", "-c", script]).returncode == status


def catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler installed for `sig` (SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught & (1 << (sig - 1)))


def trap_script(sig: signal.Signals, marker: pathlib.Path) -> str:
    name = sig.name[3:]
    return (f'trap \'echo "got {name}" > "{marker}"; exit 3\' {name}; echo ready; '
            "while :; do sleep 0.02; done")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_signal_to_viewbox_reaches_the_command(as_user: Caller, shared_dir: pathlib.Path,
                                               sig: signal.Signals) -> None:
    marker = shared_dir / "trapped"
    proc = as_user.popen(["run", "--rw", str(shared_dir), "--", "sh", "-c", trap_script(sig, marker)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        # Once viewbox has taken the signals over (the next test is about the moment before).
        # Python catches SIGINT from the start, so SigCgt tells nothing about that one: the CLI
        # installs all its handlers in one go, so wait for the others.
        assert wait_until(lambda: all(catches(proc.pid, s) for s in FORWARDED if s != signal.SIGINT), 5)
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 3
        assert marker.read_text() == f"got {sig.name[3:]}\n"
    finally:
        stop(proc)


def test_signal_right_after_the_command_starts_is_forwarded(shared_dir: pathlib.Path) -> None:
    """A supervisor may stop a service as soon as it said "ready". viewbox must not die of
    (or swallow) a signal that arrives once the command runs but before `viewbox run` has
    installed its forwarding handlers."""
    marker = shared_dir / "trapped"
    for attempt in range(30):  # the window is short: try often enough to hit it
        proc = Caller("root").popen(["run", "--rw", str(shared_dir), "--", "sh", "-c",
                                     trap_script(signal.SIGTERM, marker)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline() == "ready\n", proc.stderr.read()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 3, f"attempt {attempt}: viewbox ended with {proc.returncode}"
        finally:
            stop(proc)


def test_sigkill_of_viewbox_leaves_no_process(as_user: Caller) -> None:
    marker = unique()
    proc = as_user.popen(["run", "--", "sh", "-c", f"sleep 300 & sleep 300; : {marker}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # init, sh and both sleeps, all in the sandbox's pid namespace
        assert wait_until(lambda: len(sandbox_members(marker)[1]) == 4, 10), sandbox_members(marker)
        ns, members = sandbox_members(marker)
        assert proc.pid not in members
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        assert wait_until(lambda: not members_of(ns), 1.0), f"still alive after 1 s: {members_of(ns)}"
        assert live_processes(marker) == []
    finally:
        stop(proc)


# --- 8. errors ---------------------------------------------------------------------------

def test_missing_bind_source(as_user: Caller) -> None:
    missing = "/" + unique("nonexistent")
    before = mountinfo()
    done = as_user.run(["--ro", missing, "--", "true"])
    assert done.returncode == 125
    line = one_line_error(done.stderr)
    assert missing in line and "No such file or directory".lower() in line.lower()
    assert live_processes(missing) == []
    assert mountinfo() == before


def test_missing_bind_source_names_the_flag(as_user: Caller) -> None:
    # The CLI user typed --ro; the message should say so (the API says "api: ro").
    missing = "/" + unique("nonexistent")
    line = one_line_error(as_user.run(["--ro", missing, "--", "true"]).stderr)
    assert "--ro" in line, line


def test_missing_command(as_user: Caller) -> None:
    command = unique("no-such-cmd")
    before = mountinfo()
    done = as_user.run(["--", command, "arg"])
    assert done.returncode == 127
    assert command in one_line_error(done.stderr)
    assert live_processes(command) == []
    assert mountinfo() == before


@pytest.mark.parametrize("command", ["/etc/passwd", "/etc"])
def test_command_not_executable(as_user: Caller, command: str) -> None:
    done = as_user.run(["--", command])
    assert done.returncode == 126
    line = one_line_error(done.stderr)
    assert command in line and "Permission denied" in line


def test_missing_workdir(as_user: Caller) -> None:
    missing = "/" + unique("no-such-dir")
    done = as_user.run(["--workdir", missing, "--", "true"])
    assert done.returncode == 125
    assert missing in one_line_error(done.stderr)


def test_missing_user_namespaces_fails_closed() -> None:
    """A kernel (here: a user namespace) that allows no user namespaces: one line, 125."""
    marker = unique()
    before = mountinfo()
    script = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$0" -m viewbox run -- true "$1"'
    done = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, sys.executable, marker],
                          env=Caller("root").viewbox_env(None), capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 125, done.stderr
    line = one_line_error(done.stderr)
    assert "user namespaces" in line
    assert live_processes(marker) == []
    assert mountinfo() == before


def test_no_command(as_user: Caller) -> None:
    done = as_user.run(["--"])
    assert done.returncode == 125
    assert "no command" in one_line_error(done.stderr)


# --- 9. environment -----------------------------------------------------------------------

ENV_JSON = "import json, os; print(json.dumps(dict(os.environ)))"


def test_environment_is_clean(as_user: Caller) -> None:
    host_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "host-secret",
                "GITHUB_TOKEN": "host-token", "PYTHONSTARTUP": "/nonexistent.py"}
    done = as_user.run(py(ENV_JSON), env=host_env)
    assert done.returncode == 0, done.stderr
    inside = json.loads(done.stdout)
    assert set(inside) <= {"PATH", "LANG", "TERM", "HOME"}, inside
    assert inside["HOME"] == "/tmp" and inside["PATH"]
    assert "host-secret" not in done.stdout and "host-token" not in done.stdout


def test_env_flag_passes_a_named_variable(as_user: Caller) -> None:
    host_env = {"PATH": "/usr/bin:/bin", "AWS_SECRET_ACCESS_KEY": "host-secret", "OTHER_SECRET": "other"}
    done = as_user.run(["--env", "AWS_SECRET_ACCESS_KEY", "--env", "GREETING=hi", *py(ENV_JSON)], env=host_env)
    assert done.returncode == 0, done.stderr
    inside = json.loads(done.stdout)
    assert inside["AWS_SECRET_ACCESS_KEY"] == "host-secret"
    assert inside["GREETING"] == "hi"
    assert "OTHER_SECRET" not in inside


# --- audit ----------------------------------------------------------------------------------

def test_audit_file_has_start_and_exit(as_user: Caller, shared_dir: pathlib.Path) -> None:
    audit = shared_dir / "events.jsonl"
    done = as_user.run(["--audit", str(audit), "--", "sh", "-c", "exit 3"])
    assert done.returncode == 3, done.stderr
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    # start, the spawn, the calls the supervisor saw (its exec at least), exit: in that order
    kinds = [e["event"] for e in events]
    assert kinds[:1] == ["start"] and kinds[-1:] == ["exit"] and "spawned" in kinds
    assert set(kinds[1:-1]) == {"spawned", "syscall"}
    start, end = events[0], events[-1]
    assert start["argv"] == ["sh", "-c", "exit 3"]
    assert end["returncode"] == 3
    assert {e["sandbox"] for e in events if "sandbox" in e} == {start["sandbox"]}
    assert all(isinstance(e["time"], float) for e in events) and start["time"] <= end["time"]


def test_audit_file_records_a_setup_error(as_user: Caller, shared_dir: pathlib.Path) -> None:
    audit = shared_dir / "events.jsonl"
    command = unique("no-such-cmd")
    assert as_user.run(["--audit", str(audit), "--", command]).returncode == 127
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "error" and set(kinds[1:-1]) <= {"syscall"}
    # the search along PATH is in the audit: each execve the command lookup tried
    tried = [e["args"]["path"] for e in events if e.get("syscall") == "execve"]
    assert tried and all(path.endswith("/" + command) for path in tried)
    assert command in events[-1]["message"] and events[-1]["exit_code"] == 127


# --- the Python API ---------------------------------------------------------------------------

def test_api_run_captures_bytes() -> None:
    result = viewbox.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert 0 < result.duration < 10
    assert [event.kind for event in result.events] == ["start", "spawned", "exit"]


def test_api_run_input_and_overrides() -> None:
    result = viewbox.run(["sh", "-c", "cat; hostname; echo $GREETING"], input=b"fed in\n",
                         hostname="api-box", env={"GREETING": "hello"})
    assert result.stdout == b"fed in\napi-box\nhello\n", result.stderr


def test_api_signal_status() -> None:
    result = viewbox.run(["sh", "-c", "kill -9 $$"])
    assert (result.returncode, result.signal, result.exit_status) == (-9, 9, 137)


def test_api_spawn_pipes_and_communicate() -> None:
    with viewbox.Sandbox() as box:
        proc = box.spawn(["sh", "-c", "tr a-z A-Z; echo done >&2"], stdin=viewbox.PIPE,
                         stdout=viewbox.PIPE, stderr=viewbox.PIPE)
        out, err = proc.communicate(b"hello sandbox\n", timeout=10)
        assert (out, err, proc.returncode) == (b"HELLO SANDBOX\n", b"done\n", 0)
        assert proc.poll() == 0


def test_api_kill_ends_the_whole_sandbox() -> None:
    marker = unique()
    with viewbox.Sandbox() as box:
        proc = box.spawn(["sh", "-c", f"sleep 300 & sleep 300; : {marker}"], stdout=viewbox.DEVNULL)
        assert proc.poll() is None
        with pytest.raises(viewbox.TimeoutExpired):
            proc.wait(timeout=0.05)
        ns = _pid_ns(proc.pid)
        assert wait_until(lambda: len(members_of(ns)) == 4, 10), members_of(ns)
        proc.kill()
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert wait_until(lambda: not members_of(ns), 1.0), members_of(ns)


def test_api_send_signal_reaches_the_command() -> None:
    with viewbox.Sandbox() as box:
        proc = box.spawn(["sh", "-c", "trap 'exit 5' USR1; echo ready; while :; do sleep 0.02; done"],
                         stdout=viewbox.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=10) == 5


def test_api_command_not_found() -> None:
    command = unique("no-such-cmd")
    with pytest.raises(viewbox.CommandNotFound) as info:
        viewbox.run([command])
    assert command in str(info.value) and info.value.exit_code == 127
    assert isinstance(info.value, viewbox.ViewboxError)
    assert live_processes(command) == []


def test_api_command_not_executable() -> None:
    with pytest.raises(viewbox.CommandNotExecutable) as info:
        viewbox.run(["/etc/passwd"])
    assert info.value.exit_code == 126


def test_api_timeout_kills_the_sandbox() -> None:
    marker = unique()
    start = time.monotonic()
    with pytest.raises(viewbox.TimeoutExpired):
        viewbox.run(["sh", "-c", f"sleep 300; : {marker}"], timeout=0.3)
    assert time.monotonic() - start < 5
    assert wait_until(lambda: not live_processes(marker), 1.0)


def test_api_pass_fds_gives_only_the_named_fds(tmp_path: pathlib.Path) -> None:
    named = tmp_path / "named"
    named.write_text("named content")
    other = tmp_path / "other"
    other.write_text("other content")
    named_fd = os.open(named, os.O_RDONLY)
    other_fd = os.open(other, os.O_RDONLY)
    os.set_inheritable(other_fd, True)  # inheritable in the caller: still must not reach the sandbox
    try:
        code = ("import os, json; out = {}\n"
                "for fd in (5, %d):\n"
                "    try: out[fd] = os.read(fd, 100).decode()\n"
                "    except OSError as e: out[fd] = e.errno\n"
                "print(json.dumps(out))" % other_fd)
        with viewbox.Sandbox() as box:
            proc = box.spawn([INSIDE_PYTHON, "-c", code], stdout=viewbox.PIPE, pass_fds={named_fd: 5})
            out, _ = proc.communicate(timeout=10)
        got = json.loads(out)
        assert got["5"] == "named content"
        assert got[str(other_fd)] == errno.EBADF
    finally:
        os.close(named_fd)
        os.close(other_fd)


def test_api_policy_errors_are_viewbox_errors() -> None:
    with pytest.raises(viewbox.PolicyError) as info:
        viewbox.run(["true"], policy="no-such-policy")
    assert "no-such-policy" in str(info.value)
    with pytest.raises(TypeError):
        viewbox.run(["true"], no_such_override=1)


def test_api_as_nobody() -> None:
    from unpriv import run_unprivileged

    script = ("import json, viewbox\n"
              "r = viewbox.run(['sh', '-c', 'id -u; echo err >&2; exit 4'])\n"
              "print(json.dumps([r.returncode, r.stdout.decode(), r.stderr.decode(), type(r.stdout).__name__]))")
    done = run_unprivileged(["-c", script])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [4, "65534\n", "err\n", "bytes"]


def test_exit_statuses_of_the_c_core_map_to_their_exceptions() -> None:
    # errors.py stays free of cffi, so it names the statuses itself: they must match the header
    from viewbox._core import lib
    from viewbox.errors import spawn_error

    assert type(spawn_error("x", 0, lib.VB_EXIT_NOTFOUND)) is viewbox.CommandNotFound
    assert type(spawn_error("x", 13, lib.VB_EXIT_NOEXEC)) is viewbox.CommandNotExecutable
    assert type(spawn_error("x", 1, lib.VB_EXIT_SETUP)) is viewbox.SpawnError
