"""Ask rules and the supervisor's lifecycle (layer 3): a held call waits for
the callback, other sandboxes do not; a supervisor that dies takes its
sandboxes with it; one that loses a sandbox mid-call serves the others."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

from conftest import INSIDE_PYTHON, Caller, live_processes, unique, wait_until

#: Runs as the test's caller (root, or nobody through the API in a child process).
ASK_SCRIPT = textwrap.dedent("""
    import json, sys, viewbox
    work, python = sys.argv[1], sys.argv[2]
    seen = []

    def on_request(request):
        seen.append({"path": request.path, "syscall": request.syscall, "access": list(request.access),
                     "rule": request.rule})
        return viewbox.Decision.DENY if len(seen) == 1 else viewbox.Decision.ALLOW_ALWAYS

    code = (
        "import os\\n"
        "for i in range(3):\\n"
        "    try:\\n"
        "        print(open(%r).read().strip())\\n"
        "    except OSError as e:\\n"
        "        print('errno', e.errno)\\n" % (work + "/asked.txt"))
    result = viewbox.run([python, "-c", code], rw=[work], ask=["read:" + work + "/asked.txt"],
                         on_request=on_request, audit=True)
    calls = [e.details for e in result.events if e.kind == "syscall" and e.details.get("resolved") == work + "/asked.txt"]
    print(json.dumps({"stdout": result.stdout.decode(), "seen": seen, "returncode": result.returncode,
                      "decisions": [c["decision"] for c in calls]}))
""")


def test_ask_denies_once_then_allows_always(as_user: Caller, shared_dir: pathlib.Path) -> None:
    (shared_dir / "asked.txt").write_text("the answer\n")
    (shared_dir / "asked.txt").chmod(0o644)
    script = shared_dir / "ask.py"
    script.write_text(ASK_SCRIPT)
    done = as_user.python([str(script), str(shared_dir), INSIDE_PYTHON])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["returncode"] == 0
    # EACCES, then success, then success without asking again
    assert report["stdout"].splitlines() == ["errno 13", "the answer", "the answer"]
    assert len(report["seen"]) == 2, report["seen"]
    first = report["seen"][0]
    assert first["path"] == f"{shared_dir}/asked.txt" and first["access"] == ["read"]
    assert first["syscall"] in ("open", "openat") and "ask" in first["rule"]
    assert report["decisions"] == ["deny", "allow", "allow"]


def test_without_a_callback_ask_denies(as_user: Caller, shared_dir: pathlib.Path) -> None:
    (shared_dir / "asked.txt").write_text("x\n")
    (shared_dir / "asked.txt").chmod(0o644)
    done = as_user.run(["--ro", str(shared_dir), "--ask", f"{shared_dir}/asked.txt", "--",
                        "cat", f"{shared_dir}/asked.txt"], stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "Permission denied" in done.stderr


def test_api_yields_the_audit_events(as_user: Caller, shared_dir: pathlib.Path) -> None:
    code = textwrap.dedent("""
        import json, sys, viewbox
        r = viewbox.run([sys.argv[1], "-c", "open('/etc/hostname').read()"], audit=sys.argv[2])
        print(json.dumps([{"event": e.kind, **e.details} for e in r.events]))
    """)
    log = shared_dir / "ev.jsonl"
    done = as_user.python(["-c", code, INSIDE_PYTHON, str(log)])
    assert done.returncode == 0, done.stderr
    from_api = json.loads(done.stdout)
    from_file = [json.loads(line) for line in log.read_text().splitlines()]
    for e in from_file:
        e.pop("time")
    assert from_api == from_file  # the same events, in the same order
    opened = [e for e in from_api if e["event"] == "syscall" and e["args"].get("path") == "/etc/hostname"]
    assert opened and opened[0]["decision"] == "allow" and "O_RDONLY" in opened[0]["args"]["flags"]


def _open_fds() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the listing's own fd
    return fds


HOLD_SCRIPT = textwrap.dedent("""
    import pathlib, sys, threading, viewbox
    work, python, marker = sys.argv[1], sys.argv[2], sys.argv[3]

    def on_request(request):
        pathlib.Path(work, "asked").write_text(request.path)
        threading.Event().wait()  # never answers

    viewbox.run([python, "-c", f"open({work!r} + '/held.txt').read()  # {marker}"],
                rw=[work], ask=[work + "/held.txt"], on_request=on_request)
""")


def test_killing_the_supervisor_mid_call_kills_the_sandbox(as_user: Caller, shared_dir: pathlib.Path) -> None:
    (shared_dir / "held.txt").write_text("x\n")
    script = shared_dir / "hold.py"
    script.write_text(HOLD_SCRIPT)
    marker = unique("held")
    env = as_user.viewbox_env(None)
    host = subprocess.Popen([sys.executable if as_user.uid == 0 else "/usr/bin/python3", str(script),
                             str(shared_dir), INSIDE_PYTHON, marker], env=env, cwd="/", **as_user.user_kw())
    try:
        assert wait_until(lambda: (shared_dir / "asked").exists(), 30), "the call never reached the callback"
        assert live_processes(marker), "the sandboxed command should be waiting in its call"
        host.send_signal(signal.SIGKILL)  # the supervisor (a thread of this process) dies with it
        host.wait(timeout=10)
        assert wait_until(lambda: not live_processes(marker), 10), live_processes(marker)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


def test_a_sandbox_dying_mid_call_leaves_the_others_served(shared_dir: pathlib.Path) -> None:
    import viewbox
    from viewbox import core

    (shared_dir / "held.txt").write_text("x\n")
    (shared_dir / "free.txt").write_text("free\n")
    core.supervisor()  # its own fds (epoll, eventfds) are not a leak
    before = _open_fds()
    asked = []
    release = threading.Event()

    def on_request(request: viewbox.Request) -> viewbox.Decision:
        asked.append(request)
        release.wait(60)  # holds the call: the sandbox is killed meanwhile
        return viewbox.Decision.DENY

    with viewbox.Sandbox(rw=[str(shared_dir)], ask=[f"{shared_dir}/held.txt"], deny=["**/*.secret"],
                         on_request=on_request) as held_box, \
            viewbox.Sandbox(rw=[str(shared_dir)], deny=["**/*.secret"]) as busy_box:
        held = held_box.spawn([INSIDE_PYTHON, "-c", f"open('{shared_dir}/held.txt').read()"])
        busy = busy_box.spawn(["sh", "-c", f"for i in $(seq 300); do cat {shared_dir}/free.txt; done"],
                              stdout=viewbox.PIPE)
        assert wait_until(lambda: asked, 30)
        held.kill()  # while its call waits in the supervisor
        assert held.wait(timeout=10) == -signal.SIGKILL
        out, _ = busy.communicate(timeout=60)
        assert busy.returncode == 0 and out == b"free\n" * 300
        busy.stdout.close()  # type: ignore[union-attr]  # the test's own end of the pipe
        # and it still serves new sandboxes
        again = busy_box.run(["cat", f"{shared_dir}/free.txt"])
        assert again.stdout == b"free\n"
    release.set()
    assert wait_until(lambda: core.supervisor().serving == 0, 10)
    assert _open_fds() <= before  # nothing leaked (fds of calls, brokers, listeners)


def test_the_cli_asks_on_its_terminal(shared_dir: pathlib.Path) -> None:
    """`viewbox run` with an ask rule and a terminal: the question appears there and the answer counts."""
    import pty

    (shared_dir / "asked.txt").write_text("the answer\n")
    caller = Caller("root")
    argv = caller.viewbox_argv(["run", "--ro", str(shared_dir), "--ask", f"read:{shared_dir}/asked.txt", "--",
                                "sh", "-c", f"cat {shared_dir}/asked.txt; cat {shared_dir}/asked.txt"])
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        os.chdir("/")
        os.execve(argv[0], argv, caller.viewbox_env(None))
    seen = b""
    answers = iter([b"o\n", b"n\n"])  # once, then deny
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the child is gone
            break
        if not chunk:
            break
        seen += chunk
        if seen.count(b"allow [o]nce") > seen.count(b"\n[answered]"):
            os.write(terminal, next(answers))
            seen += b"\n[answered]"
    _, status = os.waitpid(pid, 0)
    text = seen.decode(errors="replace")
    assert text.count("wants to read") == 2 and f"{shared_dir}/asked.txt" in text, text
    assert "the answer" in text and "Permission denied" in text, text
    assert os.waitstatus_to_exitcode(status) == 1  # the second cat was denied
