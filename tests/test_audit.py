"""Per-call audit: the supervisor (layer 3) sees each filesystem and exec call
of an audited sandbox and writes one JSON line for it."""
from __future__ import annotations

import json
import pathlib
import textwrap

from conftest import Caller, unique


def _events(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_names_path_flags_and_decision(as_user: Caller, shared_dir: pathlib.Path) -> None:
    log = shared_dir / "ev.jsonl"
    done = as_user.run(["--audit", str(log), "--", "python3", "-c", 'open("/etc/hostname").read()'])
    assert done.returncode == 0, done.stderr
    events = _events(log)  # every line is valid JSON
    kinds = {e["event"] for e in events}
    assert {"start", "syscall", "exit"} <= kinds
    opened = [e for e in events if e["event"] == "syscall" and e["args"].get("path") == "/etc/hostname"]
    assert opened, "the open of /etc/hostname is not in the audit"
    call = opened[0]
    assert call["syscall"] in ("open", "openat", "openat2")
    assert call["args"]["flags"].split("|")[0] == "O_RDONLY" and "O_CLOEXEC" in call["args"]["flags"]
    assert call["decision"] == "allow" and call["rule"]
    execs = [e["args"]["path"] for e in events if e["event"] == "syscall" and e["syscall"] == "execve"]
    assert any(p.endswith("/python3") for p in execs)


def test_audited_run_behaves_the_same(as_user: Caller, shared_dir: pathlib.Path) -> None:
    log = shared_dir / "ev.jsonl"
    script = "mkdir /tmp/d && echo hi > /tmp/d/f && cat /tmp/d/f && rm -r /tmp/d && ls /tmp/d; exit 3"
    done = as_user.run(["--audit", str(log), "--", "sh", "-c", script])
    plain = as_user.run(["--", "sh", "-c", script])
    assert (done.returncode, done.stdout) == (plain.returncode, plain.stdout) == (3, "hi\n")
    calls = {e["syscall"] for e in _events(log) if e["event"] == "syscall"}
    assert {"mkdir", "unlinkat"} & calls or {"mkdirat", "unlinkat"} & calls


def test_denied_calls_never_reach_the_supervisor(shared_dir: pathlib.Path, as_user: Caller) -> None:
    log = shared_dir / "ev.jsonl"
    # chroot is denied by the seccomp baseline: it must fail with EPERM and not be audited as allowed
    code = "import ctypes,os; l=ctypes.CDLL(None,use_errno=True); print(l.chroot(b'/tmp'), ctypes.get_errno())"
    done = as_user.run(["--audit", str(log), "--", "python3", "-c", code])
    assert done.stdout.split() == ["-1", "1"], done.stderr
    assert not [e for e in _events(log) if e.get("syscall") == "chroot"]


def test_the_sandbox_does_not_hold_its_listener(as_user: Caller, shared_dir: pathlib.Path) -> None:
    log = shared_dir / "ev.jsonl"
    code = textwrap.dedent("""
        import os
        targets = []
        for n in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{n}"))
            except FileNotFoundError:  # the descriptor listdir itself used
                pass
        print(sorted(targets))
    """)
    done = as_user.run(["--audit", str(log), "--", "python3", "-c", code])
    assert done.returncode == 0, done.stderr
    assert "seccomp" not in done.stdout


def test_one_supervisor_serves_concurrent_sandboxes(as_user: Caller, shared_dir: pathlib.Path) -> None:
    # Two audited sandboxes at once in one process: both are served, one
    # ending (mid-way through the other's calls) disturbs nothing, and the
    # supervisor lets go of both.
    logs = [shared_dir / f"{unique('ev')}.jsonl" for _ in range(2)]
    driver = textwrap.dedent(f"""
        import time, viewbox
        from viewbox import core
        long = viewbox.Sandbox(audit={str(logs[0])!r})
        short = viewbox.Sandbox(audit={str(logs[1])!r})
        slow = long.spawn(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do cat /etc/hostname >/dev/null; sleep 0.05; done"])
        quick = short.spawn(["sh", "-c", "cat /etc/hostname >/dev/null; kill -9 $$"])
        assert quick.wait(10) == -9
        assert slow.wait(10) == 0
        for _ in range(100):
            if core.supervisor().serving == 0:
                break
            time.sleep(0.01)
        print(core.supervisor().serving)
    """)
    done = as_user.python(["-c", driver])
    assert (done.returncode, done.stdout.strip()) == (0, "0"), done.stderr
    slow_opens = [e for e in _events(logs[0]) if e.get("args", {}).get("path") == "/etc/hostname"]
    assert len(slow_opens) == 8


def test_a_supervisor_stops_and_lets_go() -> None:
    from viewbox import core

    supervisor = core.Supervisor()
    assert supervisor.serving == 0
    supervisor.stop()  # returns once its thread has ended
    assert not supervisor._thread.is_alive()


def test_a_time_view_keeps_clock_reads_out_of_the_audit(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """With a clock of its own the supervisor answers every clock read; those decide nothing
    and stay out of the audit, which still has the program's file calls."""
    log = shared_dir / "ev.jsonl"
    code = "import time; [time.time() for _ in range(200)]; open('/etc/hostname').read(); print(time.gmtime().tm_year)"
    done = as_user.run(["--audit", str(log), "--time-start", "2009-04-21T12:00:00Z", "--", "python3", "-c", code])
    assert done.returncode == 0 and done.stdout == "2009\n", done.stderr
    calls = [e for e in _events(log) if e["event"] == "syscall"]
    assert any(e["args"].get("path") == "/etc/hostname" for e in calls)
    assert not [e for e in calls if e["syscall"] in ("clock_gettime", "gettimeofday", "time")]
