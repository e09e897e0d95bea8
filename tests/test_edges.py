"""Runtime and CLI edges: many open fds, timeouts that keep their output, processes left
running when the command exits, a broken pipe, job control, a hidden working directory, and
the one size of the seccomp program."""
from __future__ import annotations

import json
import textwrap

import pytest

import viewbox
from conftest import INSIDE_PYTHON, Caller

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
