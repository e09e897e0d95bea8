"""The default policy holds bombs (issue 13): `viewbox run -- CMD` with no flags.

A fork bomb and a memory bomb end with exit status 124 and one line saying
which limit, as root (a cgroup: v1 on our hybrid machines) and as user nobody
(the rlimit level: RLIMIT_NPROC and the watchdog), and the host gets its
processes and its memory back. The limits are documented, sane for real
work, inherited by the shipped policies that extend default, and can be
changed or removed ("unlimited") by a policy, a flag or an API keyword.

Every bomb here is held by viewbox's limits alone: none is ever run natively
or with its limit removed (on a shared machine an unheld fork bomb takes
every pid of the host). What removing a limit does is shown with a bounded
number of processes instead.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import textwrap
import time
from typing import Any

import pytest

import viewbox
from conftest import INSIDE_PYTHON, Caller, live_processes, stop, unique, wait_until
from viewbox import quota
from viewbox.doctor import probe
from viewbox.policy import SHIPPED, load_policy, shipped_path

DEFAULT_MEMORY = 4 << 30
DEFAULT_PIDS = 1024

#: bash: every process forks two more and goes; refused forks are retried
FORK_BOMB = "f() { f | f & }; f; sleep 30"
#: every process spins on fork() and ignores its failures: it keeps the CPUs busy, and
#: processes preempted in the middle of a fork hold places of the count
SPIN_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
MEMORY_BOMB = "a = []\nwhile True:\n    a.append(b'x' * (1 << 20))\n"

#: host processes that may come and go meanwhile (other tests, other users of the machine);
#: a bomb left behind is at least a thousand
PROCESS_TOLERANCE = 200
#: MemAvailable that may come and go meanwhile; a memory bomb left behind holds 4 GiB
MEMORY_TOLERANCE = 1 << 30


def host_processes() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


def level_for(user: str) -> str:
    """The level a run of `user` with the default limits gets here."""
    if user == "nobody":
        return "rlimit"
    info = probe().cgroup
    return "cgroup v2" if set(quota.CONTROLLERS) <= set(info.v2_controllers) else "cgroup v1"


def killed_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("viewbox: killed: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def run_bomb(caller: Caller, argv: list[str], marker: str) -> tuple[int, str, float]:
    """`viewbox run -- ARGV` as `caller`, no flags: (exit status, stderr, seconds). Killed
    (and the test failed) if it is not over in a minute."""
    started = time.monotonic()
    proc = caller.popen(["run", "--", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert wait_until(lambda: not live_processes(marker), 10)
    return proc.returncode, stderr, time.monotonic() - started


# --- the defaults ----------------------------------------------------------------------

def test_default_policy_sets_memory_and_pids_and_extending_policies_inherit_them() -> None:
    default = load_policy("default")
    assert (default.limits.memory, default.limits.pids) == (DEFAULT_MEMORY, DEFAULT_PIDS)
    where = default.origin("limits.pids")
    assert where.file == str(shipped_path("default"))
    extending = [name for name in SHIPPED
                 if name != "default" and str(shipped_path("default")) in load_policy(name).sources]
    assert {"daemon", "python"} <= set(extending)
    for name in extending:
        limits = load_policy(name).limits
        assert (limits.memory, limits.pids) == (DEFAULT_MEMORY, DEFAULT_PIDS), name
    # the tmpfs areas of the view are memory too: together they fit well inside the limit
    tmpfs = sum(mount.size for mount in default.fs.tmpfs)
    assert tmpfs + (64 << 20) < DEFAULT_MEMORY / 2  # /dev/shm is 64M


# --- fork bombs --------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["root", "nobody"])
def test_fork_bomb_ends_with_124_by_default(user: str) -> None:
    caller = Caller(user)
    marker = unique("forkbomb")
    before = host_processes()
    status, stderr, seconds = run_bomb(caller, ["bash", "-c", f"{FORK_BOMB} # {marker}"], marker)
    assert status == 124, stderr
    assert killed_line(stderr).startswith(f"viewbox: killed: pids limit {DEFAULT_PIDS} reached (peak ")
    assert seconds < 30  # ended by the limit, not by the bomb's own `sleep 30`
    assert wait_until(lambda: host_processes() <= before + PROCESS_TOLERANCE, 10), (before, host_processes())


SPIN_BOMB_REPORT = textwrap.dedent("""\
    import json, sys, time, viewbox
    started = time.monotonic()
    result = viewbox.run([sys.argv[1], "-c", sys.argv[2]])
    print(json.dumps({"status": result.exit_status, "seconds": time.monotonic() - started,
                      **result.usage.to_dict()}))
    """)


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_spinning_fork_bomb_is_ended_at_each_level(user: str) -> None:
    # At the rlimit level this bomb once ran for minutes: racing forks made the kernel refuse
    # them tens of tasks short of RLIMIT_NPROC, so the watchdog never counted the limit, and
    # it walked the host's /proc, a pid at a time, slower than the bomb replaced them.
    marker = unique("spinbomb")
    before = host_processes()
    done = Caller(user).python(["-c", SPIN_BOMB_REPORT, INSIDE_PYTHON, f"# {marker}\n{SPIN_BOMB}"],
                               timeout=120)
    assert done.returncode == 0, done.stderr
    usage = json.loads(done.stdout)
    assert (usage["status"], usage["limit"], usage["level"]) == (124, "pids", level_for(user)), usage
    assert usage["reason"].startswith(f"pids limit {DEFAULT_PIDS} reached (peak ")
    # (a loaded machine is slow to tear down a thousand busy processes: room for that)
    assert usage["seconds"] < 60, usage
    if user == "root":
        assert usage["pids_peak"] <= DEFAULT_PIDS  # pids.max: the kernel refused every fork past it
    else:
        # RLIMIT_NPROC is the kernel's stop between the watchdog's samples
        assert DEFAULT_PIDS <= usage["pids_peak"] <= DEFAULT_PIDS * quota.NPROC_HEADROOM
    assert wait_until(lambda: not live_processes(marker), 10)
    assert wait_until(lambda: host_processes() <= before + PROCESS_TOLERANCE, 10), (before, host_processes())


def test_rlimit_nproc_counts_the_sandbox_not_the_host_user(world_dir: pathlib.Path) -> None:
    """RLIMIT_NPROC counts per user namespace (Linux >= 5.14): nobody's processes elsewhere on
    the host do not use up a sandbox's count. Natively they do."""
    nobody = Caller("nobody")
    others = [subprocess.Popen(["sleep", "60"], **nobody.user_kw()) for _ in range(60)]
    try:
        # natively: an RLIMIT_NPROC of 40 with 60 processes of nobody's running: no fork at all
        native = nobody.native(["prlimit", "--nproc=40:40", "sh", "-c", "sleep 0 & wait; echo forked"])
        assert "forked" not in native.stdout and "fork" in native.stderr.lower(), native
        # a sandbox with --pids 20 (RLIMIT_NPROC 40) forks its 10 processes all the same
        done = nobody.run(["--pids", "20", "--", "sh", "-c",
                           "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1 & done; wait; echo forked"])
        assert (done.returncode, done.stdout) == (0, "forked\n"), done.stderr
    finally:
        for proc in others:
            proc.kill()
            proc.wait()


# --- memory bombs -----------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["root", "nobody"])
def test_memory_bomb_ends_with_124_by_default(user: str) -> None:
    marker = unique("membomb")
    before = mem_available()
    status, stderr, _ = run_bomb(Caller(user), [INSIDE_PYTHON, "-c", f"# {marker}\n{MEMORY_BOMB}"], marker)
    assert status == 124, stderr
    assert killed_line(stderr).startswith("viewbox: killed: memory limit 4 GiB reached (peak ")
    # the shipped limit is held by the watchdog as a matter of course: no note on every run
    assert "running degraded" not in stderr
    assert wait_until(lambda: mem_available() >= before - MEMORY_TOLERANCE, 10), (before, mem_available())


# --- cgroup v2 --------------------------------------------------------------------------------

def _v2_usable() -> bool:
    return set(quota.CONTROLLERS) <= set(probe().cgroup.v2_controllers)


@pytest.mark.skipif(not _v2_usable(), reason=(
    "this machine cannot exercise the cgroup v2 level: its cgroup v2 has no memory, cpu and pids "
    "controllers (hybrid layout, v1 holds them)"))
def test_bombs_end_with_124_at_the_cgroup_v2_level() -> None:
    for argv, reason in (([INSIDE_PYTHON, "-c", SPIN_BOMB], f"pids limit {DEFAULT_PIDS} reached"),
                         ([INSIDE_PYTHON, "-c", MEMORY_BOMB], "memory limit 4 GiB reached")):
        result = viewbox.run(argv)
        assert result.usage is not None
        assert (result.exit_status, result.usage.level) == (124, "cgroup v2")
        assert result.usage.reason is not None and result.usage.reason.startswith(reason)


def test_root_without_a_cgroup_is_held_by_the_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root where no cgroup can be made, as on a pure cgroup v2 host from a login session (its
    cgroup holds processes, so no controller can be enabled below it): the rlimit level. Root's
    sandbox runs as host uid 0, for which the kernel does not enforce RLIMIT_NPROC, so the
    watchdog alone ends the run (a bounded number of processes here: never an unheld bomb)."""
    from viewbox import doctor

    none = doctor.CgroupInfo(version="none", v2_mount=None, v2_cgroup=None, v2_controllers=(),
                             v2_writable=False, v1_mounts={}, v1_writable=())
    monkeypatch.setattr(doctor, "cgroup_info", lambda: none)
    result = viewbox.run([INSIDE_PYTHON, "-c", SPAWN_1100])
    assert result.usage is not None
    assert (result.exit_status, result.usage.level, result.usage.limit) == (124, "rlimit", "pids")
    assert result.usage.pids_peak is not None and result.usage.pids_peak >= DEFAULT_PIDS


# --- overriding and removing the defaults ---------------------------------------------------------

#: 1100 processes at once, each holding its place for a moment: more than the default pids
SPAWN_1100 = ("import os, time\nfor i in range(1100):\n    if os.fork() == 0:\n        time.sleep(3)\n"
              "        os._exit(0)\nprint('started 1100', flush=True)\nwhile True:\n    try:\n        os.wait()\n"
              "    except ChildProcessError:\n        break\n")


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_pids_flag_raises_or_removes_the_default(user: str, shared_dir: pathlib.Path) -> None:
    caller = Caller(user)
    # natively, 1100 processes are fine
    assert caller.native([INSIDE_PYTHON, "-c", SPAWN_1100]).stdout == "started 1100\n"
    held = caller.run(["--", INSIDE_PYTHON, "-c", SPAWN_1100])
    assert held.returncode == 124, held.stderr
    if user == "root":
        assert "started" not in held.stdout  # pids.max refused the 1025th task
    assert killed_line(held.stderr).startswith(f"viewbox: killed: pids limit {DEFAULT_PIDS} reached")
    for value in ("2000", "unlimited"):
        report = shared_dir / f"report-{value}.json"
        done = caller.run(["--pids", value, "--report", str(report), "--", INSIDE_PYTHON, "-c", SPAWN_1100])
        assert (done.returncode, done.stdout) == (0, "started 1100\n"), done.stderr
        assert json.loads(report.read_text())["limits"]["pids"] == (2000 if value == "2000" else None)


def test_policy_file_removes_the_defaults(world_dir: pathlib.Path) -> None:
    policy = world_dir / "no-limits.toml"
    policy.write_text('[viewbox]\nversion = 1\nextends = ["default"]\n\n[limits]\n'
                      'memory = "unlimited"\npids = "unlimited"\n')
    policy.chmod(0o644)
    loaded = load_policy(policy)
    assert (loaded.limits.memory, loaded.limits.pids) == (None, None)
    shown = Caller("root").cli(["show", "--policy", str(policy)])
    assert shown.returncode == 0, shown.stderr
    assert f'memory = "unlimited"  # from {policy}:6' in shown.stdout.splitlines()
    assert f'pids = "unlimited"  # from {policy}:7' in shown.stdout.splitlines()
    rendered = world_dir / "rendered.toml"
    rendered.write_text(shown.stdout)
    assert load_policy(rendered) == loaded  # and it loads back as shown
    # and it runs the 1100 processes, as nobody (no RLIMIT_NPROC) and root (no cgroup)
    for user in ("root", "nobody"):
        done = Caller(user).run(["--policy", str(policy), "--", INSIDE_PYTHON, "-c", SPAWN_1100])
        assert (done.returncode, done.stdout) == (0, "started 1100\n"), (user, done.stderr)


def test_api_keywords_change_and_remove_the_defaults() -> None:
    result = viewbox.run([INSIDE_PYTHON, "-c", SPAWN_1100], pids="unlimited", memory="unlimited",
                         capture_output=True)
    assert (result.returncode, result.stdout) == (0, b"started 1100\n"), result.stderr
    assert result.usage is not None and result.usage.level == "rlimit"  # no limit: no cgroup either
    with viewbox.Sandbox(memory="64M", pids="unlimited") as box:
        assert (box.policy.limits.memory, box.policy.limits.pids) == (64 << 20, None)
        balloon = box.run([INSIDE_PYTHON, "-c", MEMORY_BOMB])
    assert balloon.usage is not None and balloon.usage.reason is not None
    assert balloon.usage.reason.startswith("memory limit 64 MiB reached")


def test_a_limit_that_is_neither_a_value_nor_unlimited_says_so(world_dir: pathlib.Path) -> None:
    policy = world_dir / "bad.toml"
    policy.write_text('[viewbox]\nversion = 1\n\n[limits]\npids = "none"\nmemory = "off"\n')
    done = Caller("root").cli(["check", str(policy)])
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f'{policy}:5: [limits].pids: expected an integer, got string "none"; "unlimited" sets no limit',
        f'{policy}:6: [limits].memory: invalid size "off" (a number with B, K, M, G or T, e.g. "256M"; '
        'or an integer of bytes); "unlimited" sets no limit',
    ]
    flag = Caller("root").run(["--pids", "lots", "--", "true"])
    assert flag.returncode == 125
    assert flag.stderr == 'viewbox: --pids: expected an integer, got string "lots"; "unlimited" sets no limit\n'


# --- real work fits ----------------------------------------------------------------------------

BUILD = textwrap.dedent("""\
    set -e
    mkdir /tmp/build && cd /tmp/build
    for i in $(seq 1 40); do printf 'int f%d(void) { return %d; }\\n' $i $i > f$i.c; done
    printf 'all: $(patsubst %%.c,%%.o,$(wildcard *.c))\\n\\tcc -shared -o libf.so *.o\\n' > Makefile
    make -s -j16 CFLAGS=-fPIC
    python3 -c "import threading, time
    threads = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(300)]
    [t.start() for t in threads]; b = bytearray(1 << 30); b[::4096] = b'x' * (len(b) // 4096)
    [t.join() for t in threads]; print('threads and 1 GiB ok')"
    head -c 200000000 /dev/zero > /tmp/scratch
    ls libf.so
    """)


def test_defaults_leave_room_for_real_work(as_user: Caller) -> None:
    """A parallel build, 300 threads with 1 GiB, 200 MB in /tmp: all inside the default limits."""
    done = as_user.run(["--", "sh", "-c", BUILD])
    assert (done.returncode, done.stdout) == (0, "threads and 1 GiB ok\nlibf.so\n"), done.stderr
    assert done.stderr == ""
