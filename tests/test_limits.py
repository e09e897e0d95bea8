"""Quotas and accounting ([limits], viewbox.quota), as a user relies on them.

Root runs get a cgroup (v1 on our hybrid machines: v1 memory, cpu and pids,
v2 without controllers); user nobody gets the rlimit level (RLIMIT_NPROC and
the memory watchdog). Every breach must end the whole sandbox, say which
limit, and exit 124; every run reports its usage; nothing may be left behind
(the last test checks cgroups, mounts and processes for the whole module).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import time
from typing import Any

import pytest

import viewbox
from conftest import HOST_ENV, INSIDE_PYTHON, Caller, cmdline, live_processes, mountinfo, stop, unique, wait_until
from viewbox import quota
from viewbox.doctor import probe

#: markers of every sandbox this module starts: none may outlive its test
MARKERS: list[str] = []

BALLOON = "a = []\nwhile True:\n    a.append(b'x' * (1 << 20))\n"
FORK_BOMB = "f() { f | f & }; f; sleep 30"


def marked(label: str) -> str:
    marker = unique(label)
    MARKERS.append(marker)
    return marker


def cgroups_left(*, of_live_viewbox: bool = False) -> set[str]:
    """viewbox-* cgroups where this process's (and its children's) sandboxes' cgroups go; unless
    `of_live_viewbox`, only those of viewbox processes that are gone (or this one)."""
    found = set()
    for parent in quota.cgroup_parents(probe().cgroup):
        for name in os.listdir(parent):
            match = re.fullmatch(re.escape(quota.CGROUP_PREFIX) + r"(\d+)-\d+", name)
            if match and (of_live_viewbox or int(match[1]) == os.getpid()
                          or not os.path.exists(f"/proc/{match[1]}")):
                found.add(os.path.join(parent, name))
    return found


def command_pids(marker: str) -> list[int]:
    """Live processes running INSIDE_PYTHON with `marker` in their argv (not viewbox or its init)."""
    prefix = f"{INSIDE_PYTHON}\0-c\0".encode()
    pids = []
    for pid in live_processes(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(prefix):
                    pids.append(pid)
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module", autouse=True)
def host_state() -> dict[str, Any]:
    """What the host looks like before this module's sandboxes: compared by the last test."""
    return {"mounts": mountinfo(), "cgroups": cgroups_left()}


@pytest.fixture
def root() -> Caller:
    return Caller("root")


def root_level() -> str:
    """The level a root run gets here: v2 when it has the controllers, else v1 (our machines)."""
    info = probe().cgroup
    return "cgroup v2" if set(quota.CONTROLLERS) <= set(info.v2_controllers) else "cgroup v1"


def run_with_report(caller: Caller, args: list[str], report_dir: pathlib.Path,
                    **kw: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`viewbox run --report FILE ARGS` as `caller`: the finished run and its report."""
    report = report_dir / f"report-{unique()}.json"
    done = caller.run(["--report", str(report), *args], **kw)
    assert report.exists(), done.stderr
    return done, json.loads(report.read_text())


def killed_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("viewbox: killed: ")]
    assert len(lines) == 1, stderr
    return lines[0]


# --- 1. memory -------------------------------------------------------------------

def test_memory_balloon_is_killed_in_a_cgroup(root: Caller, shared_dir: pathlib.Path) -> None:
    marker = marked("balloon")
    done, report = run_with_report(root, ["--memory", "128M", "--", INSIDE_PYTHON, "-c",
                                          f"# {marker}\n{BALLOON}"], shared_dir)
    assert done.returncode == quota.LIMIT_EXIT_STATUS == 124
    assert killed_line(done.stderr).startswith("viewbox: killed: memory limit 128 MiB reached (peak ")
    assert report["level"] == root_level()
    assert (report["limit"], report["exit_status"]) == ("memory", 124)
    usage = report["usage"]
    # The kernel held the whole sandbox at the limit: the host never gave it more.
    assert 100 * 2**20 < usage["memory_peak_bytes"] <= 128 * 2**20
    assert not live_processes(marker)


def test_memory_balloon_is_killed_at_the_rlimit_level(shared_dir: pathlib.Path) -> None:
    nobody = Caller("nobody")
    marker = marked("balloon")
    done, report = run_with_report(nobody, ["--memory", "128M", "--", INSIDE_PYTHON, "-c",
                                            f"# {marker}\n{BALLOON}"], shared_dir)
    assert done.returncode == 124, done.stderr
    assert "viewbox: running degraded: memory: no cgroup can be made here" in done.stderr
    assert killed_line(done.stderr).startswith("viewbox: killed: memory limit 128 MiB reached (peak ")
    assert (report["level"], report["limit"]) == ("rlimit", "memory")
    # Sampled every 20 ms: past the limit, but by no more than a fast allocator gets in a few samples.
    assert 128 * 2**20 < report["usage"]["memory_peak_bytes"] < 512 * 2**20
    assert not live_processes(marker)


def test_api_memory_limit_in_result_usage() -> None:
    result = viewbox.run([INSIDE_PYTHON, "-c", BALLOON], memory="64M")
    assert result.usage is not None
    assert (result.usage.limit, result.usage.level) == ("memory", root_level())
    assert result.usage.reason.startswith("memory limit 64 MiB reached")
    assert result.returncode == -signal.SIGKILL and result.exit_status == 124


def test_shared_memory_counts_against_the_memory_limit(root: Caller, shared_dir: pathlib.Path) -> None:
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\n"
            "size = 128 << 20\nshmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)\n"
            "ctypes.memset(libc.shmat(shmid, None, 0), 1, size)\nprint('filled')\n")
    done, report = run_with_report(root, ["--memory", "64M", "--", INSIDE_PYTHON, "-c", code], shared_dir)
    assert (done.returncode, report["limit"]) == (124, "memory"), done.stderr
    assert "filled" not in done.stdout


def test_sysv_shared_memory_is_gone_after_the_run(root: Caller) -> None:
    # Natively, a segment nobody removes outlives its process (and would be left on the host).
    code = ("import ctypes, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "libc.shmat.restype = ctypes.c_void_p\nsize = 3 << 20\n"
            "shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)\n"
            "addr = libc.shmat(shmid, None, 0)\nctypes.memset(addr, 7, size)\nlibc.shmdt(ctypes.c_void_p(addr))\n"
            "segments = [l.split() for l in open('/proc/sysvipc/shm').read().splitlines()[1:]]\n"
            "print(json.dumps({'shmid': shmid, 'ipc': os.readlink('/proc/self/ns/ipc'),\n"
            "                  'segments': [(int(s[1]), int(s[3])) for s in segments]}))\n")
    with open("/proc/sysvipc/shm") as f:
        host_before = f.read()
    done = root.run(["--", INSIDE_PYTHON, "-c", code])
    assert done.returncode == 0, done.stderr
    inside = json.loads(done.stdout)
    assert (inside["shmid"], 3 << 20) in [tuple(s) for s in inside["segments"]]  # it existed inside
    with open("/proc/sysvipc/shm") as f:
        assert f.read() == host_before  # never on the host
    # ... and its IPC namespace, which held it, is gone: no process, fd or mount keeps it.
    users = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for link in [f"/proc/{pid}/ns/ipc"] + [f"/proc/{pid}/fd/{fd}" for fd in _fds(pid)]:
            try:
                if os.readlink(link) == inside["ipc"]:
                    users.append(link)
            except OSError:
                pass
    assert users == []
    assert inside["ipc"] not in "\n".join(mountinfo())


def _fds(pid: str) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []


# --- 2. pids ---------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["root", "nobody"])
def test_fork_bomb_is_contained(user: str, shared_dir: pathlib.Path) -> None:
    caller = Caller(user)
    marker = marked("forkbomb")
    report_file = shared_dir / "bomb.json"
    bomb = caller.popen(["run", "--pids", "32", "--timeout", "20s", "--report", str(report_file), "--",
                         "bash", "-c", f"{FORK_BOMB} # {marker}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # The machine stays responsive while the bomb runs.
        slowest = 0.0
        while bomb.poll() is None:
            started = time.monotonic()
            subprocess.run(["true"], check=True)
            slowest = max(slowest, time.monotonic() - started)
        _, stderr = bomb.communicate(timeout=20)
    finally:
        stop(bomb)
    assert slowest < 0.5
    report = json.loads(report_file.read_text())
    assert bomb.returncode == 124, stderr
    assert killed_line(stderr).startswith("viewbox: killed: pids limit 32 reached")
    assert report["limit"] == "pids"
    assert report["level"] == (root_level() if user == "root" else "rlimit")
    if user == "root":
        assert report["usage"]["pids_peak"] <= 32  # held there: the kernel refused every fork past it
    else:
        # the watchdog ends the run at 32; RLIMIT_NPROC stops the bomb between its samples
        assert report["usage"]["pids_peak"] <= 32 * quota.NPROC_HEADROOM
    assert report["usage"]["wall_seconds"] < 10  # ended by the limit, not the timeout
    assert not live_processes(marker)


# --- 3. cpu ----------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cpu_limit_holds_a_busy_loop_to_half_a_core(root: Caller, shared_dir: pathlib.Path) -> None:
    marker = marked("busy")
    report_file = shared_dir / "cpu.json"
    proc = root.popen(["run", "--cpus", "0.5", "--timeout", "8s", "--report", str(report_file), "--",
                       INSIDE_PYTHON, "-c", f"# {marker}\nwhile True: pass"])
    try:
        assert wait_until(lambda: command_pids(marker), 5)
        # Measured from outside: the busy process's CPU time over 5 s of wall time.
        (pid,) = command_pids(marker)
        t0, c0 = time.monotonic(), _cpu_seconds(pid)
        time.sleep(5)
        t1, c1 = time.monotonic(), _cpu_seconds(pid)
        proc.wait(timeout=10)
    finally:
        stop(proc)
    cores = (c1 - c0) / (t1 - t0)
    print(f"\ncpu = 0.5: busy loop used {c1 - c0:.2f} s of CPU in {t1 - t0:.2f} s: {cores:.3f} cores")
    assert 0.4 <= cores <= 0.6
    report = json.loads(report_file.read_text())
    assert (report["limit"], report["level"]) == ("wall", root_level())
    usage = report["usage"]
    reported = (usage["user_seconds"] + usage["system_seconds"]) / usage["wall_seconds"]
    print(f"the report: {usage['user_seconds'] + usage['system_seconds']:.2f} s of CPU in "
          f"{usage['wall_seconds']:.2f} s: {reported:.3f} cores")
    assert 0.4 <= reported <= 0.6


def test_cpu_limit_without_a_cgroup_fails_closed(shared_dir: pathlib.Path) -> None:
    report = shared_dir / "refused.json"
    done = Caller("nobody").run(["--report", str(report), "--cpus", "0.5", "--", "true"])
    assert done.returncode == 125
    (line,) = done.stderr.splitlines()
    assert line.startswith("viewbox: cgroups unavailable: [limits].cpu = 0.5 needs a cgroup")
    assert "run as root, or from a cgroup v2 subtree delegated to you" in line
    assert json.loads(report.read_text()) == {"argv": ["true"], "exit_status": 125,
                                              "error": line.removeprefix("viewbox: ")}


def test_require_cgroup_fails_closed_without_one(world_dir: pathlib.Path) -> None:
    policy = world_dir / "needs-cgroup.toml"
    policy.write_text('[viewbox]\nversion = 1\nextends = ["default"]\n\n[limits]\nrequire = "cgroup"\n')
    policy.chmod(0o644)
    done = Caller("nobody").run(["--policy", str(policy), "--", "true"])
    assert done.returncode == 125
    assert 'cgroups unavailable: [limits].require = "cgroup" needs a cgroup' in done.stderr
    assert Caller("root").run(["--policy", str(policy), "--", "true"]).returncode == 0


# --- 4. wall time ----------------------------------------------------------------------------

def test_wall_limit_ends_the_command_and_its_children(as_user: Caller) -> None:
    marker = marked("wall")
    started = time.monotonic()
    done = as_user.run(["--timeout", "2s", "--", "sh", "-c", f"sleep 100 & sleep 100 & sleep 100; : {marker}"])
    elapsed = time.monotonic() - started
    assert done.returncode == 124
    assert killed_line(done.stderr) == "viewbox: killed: wall-time limit 2 s reached (ran 2.0 s)"
    assert elapsed < 2.5
    assert not live_processes(marker)


def test_api_timeout_keyword_is_the_wall_limit() -> None:
    with viewbox.Sandbox(timeout=0.5) as box:
        result = box.run(["sh", "-c", "sleep 100 & sleep 100"])
    assert result.usage is not None and result.usage.limit == "wall"
    assert result.exit_status == 124 and result.returncode == -signal.SIGKILL
    assert 0.5 <= result.usage.wall_seconds < 1.0


def test_wall_limit_holds_when_nobody_waits() -> None:
    # An API host that spawns and looks away: the sandbox's own init ends it at the limit
    # (viewbox's backstop would act only a second later, and only inside wait/poll).
    marker = marked("unwatched")
    with viewbox.Sandbox(timeout=0.5) as box:
        proc = box.spawn(["sh", "-c", f"sleep 100 & sleep 100; : {marker}"])
        assert wait_until(lambda: len(live_processes(marker)) >= 1, 5)
        time.sleep(0.9)  # no wait(), no poll(): nothing of viewbox runs meanwhile
        assert not live_processes(marker)
        assert proc.poll() is not None
    assert proc.usage is not None and proc.usage.limit == "wall"
    assert proc.usage.reason == "wall-time limit 0.5 s reached (ran 0.5 s)"


def test_sigkill_of_viewbox_leaves_nothing_and_the_cgroup_is_swept(root: Caller) -> None:
    marker = marked("killed-viewbox")
    proc = root.popen(["run", "--memory", "256M", "--", "sh", "-c", f"sleep 100; : {marker}"])
    name = f"{quota.CGROUP_PREFIX}{proc.pid}-1"
    try:
        # the command runs (the sandbox's init, a copy of viewbox, shows the marker for a
        # moment too, before it has joined its cgroup and overwritten its command line)
        assert wait_until(lambda: any(cmdline(pid).startswith(b"sh\0-c\0") for pid in live_processes(marker)), 5)
        made = {path for path in cgroups_left(of_live_viewbox=True) if os.path.basename(path) == name}
        assert made, "the sandbox has a cgroup"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
    finally:
        stop(proc)
    assert wait_until(lambda: not live_processes(marker), 5)
    # A SIGKILLed viewbox cannot remove its cgroups: they are empty, and the next run sweeps them.
    assert made <= cgroups_left()
    # `sleep` (not marked: only sh's command line is) dies with the pid namespace, a moment later
    assert wait_until(lambda: all(_procs(path) == "" for path in made), 5)
    assert root.run(["--memory", "64M", "--", "true"]).returncode == 0
    assert not made & cgroups_left()


def _procs(cgroup: str) -> str:
    with open(os.path.join(cgroup, "cgroup.procs")) as f:
        return f.read()


# --- 5. disk ------------------------------------------------------------------------------

def test_disk_limit_stops_dd_with_enospc(as_user: Caller) -> None:
    name = unique("fill")
    fill = f"dd if=/dev/zero of=/tmp/{name} bs=1M count=50; echo status $?; stat -c %s /tmp/{name}"
    # Without it, the same dd fits in the default /tmp (a 256M tmpfs).
    unlimited = as_user.run(["--", "sh", "-c", fill])
    assert unlimited.stdout.splitlines() == ["status 0", str(50 << 20)], unlimited.stderr
    done = as_user.run(["--disk", "10M", "--", "sh", "-c", fill])
    assert "No space left on device" in done.stderr
    status, size = done.stdout.splitlines()
    assert status != "status 0" and int(size) <= 10 << 20
    assert not os.path.exists(f"/tmp/{name}")  # the host's disk was never written


# --- 6. files ------------------------------------------------------------------------------

def test_files_limit_refuses_the_65th_descriptor(as_user: Caller, world_dir: pathlib.Path) -> None:
    policy = world_dir / "files.toml"
    policy.write_text('[viewbox]\nversion = 1\nextends = ["default"]\n\n[limits]\nfiles = 64\n')
    policy.chmod(0o644)
    code = ("import errno, os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
            "except OSError as e:\n    print(max(fds), errno.errorcode[e.errno])\n")
    done = as_user.run(["--policy", str(policy), "--", INSIDE_PYTHON, "-c", code])
    assert (done.returncode, done.stdout) == (0, "63 EMFILE\n"), done.stderr


# --- 7. usage agrees with /usr/bin/time -------------------------------------------------------

CPU_BOUND = "s = 0\nfor i in range(10_000_000):\n    s += i\n"
# holds it a while, so the watchdog's samples (every 20 ms at the rlimit level) see the peak
ALLOCATES_100M = ("import time\nb = bytearray(100 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n"
                  "time.sleep(0.2)\n")


def _time_v(argv: list[str]) -> dict[str, float]:
    # HOST_ENV: without the sanitizer runtime a sanitizer build of viewbox runs with (conftest)
    done = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True, check=True,
                          env=dict(HOST_ENV))
    values = dict(re.findall(r"^\s*(.+?): (\S+)$", done.stderr, re.MULTILINE))
    return {"cpu": float(values["User time (seconds)"]) + float(values["System time (seconds)"]),
            "max_rss": int(values["Maximum resident set size (kbytes)"]) * 1024}


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_usage_agrees_with_time_v(user: str, shared_dir: pathlib.Path) -> None:
    caller = Caller(user)
    limits = ["--memory", "1G"]  # inside its limits, and with a cgroup for root
    # CPU time on this kind of virtual machine varies widely between identical runs (0.5 to
    # 1.0 s here, natively too): each side keeps the best of seven interleaved runs, and the
    # comparison gets three attempts. Wrong accounting (the init's share counted, children
    # missed) would be off in every attempt.
    for _attempt in range(3):
        native_cpu, sandbox_cpu = [], []
        for _ in range(7):
            native_cpu.append(_time_v([INSIDE_PYTHON, "-c", CPU_BOUND])["cpu"])
            done, report = run_with_report(caller, [*limits, "--", INSIDE_PYTHON, "-c", CPU_BOUND], shared_dir)
            assert done.returncode == 0 and report["limit"] is None, done.stderr
            sandbox_cpu.append(report["usage"]["user_seconds"] + report["usage"]["system_seconds"])
        if abs(min(sandbox_cpu) - min(native_cpu)) <= 0.1 * min(native_cpu):
            break
    usage = report["usage"]
    assert usage["wall_seconds"] >= sandbox_cpu[-1] * 0.9
    # its own network, and nothing of it crossed the edge
    assert [usage[k] for k in ("net_rx_bytes", "net_tx_bytes", "net_connections_in", "net_connections_out")] == \
        [0, 0, 0, 0]
    native_rss = _time_v([INSIDE_PYTHON, "-c", ALLOCATES_100M])["max_rss"]
    done, report = run_with_report(caller, [*limits, "--", INSIDE_PYTHON, "-c", ALLOCATES_100M], shared_dir)
    assert done.returncode == 0 and report["limit"] is None, done.stderr
    rss, peak = report["usage"]["max_rss_bytes"], report["usage"]["memory_peak_bytes"]
    cpu, native = min(sandbox_cpu), min(native_cpu)
    print(f"\n{user} ({report['level']}): CPU {cpu:.3f} s vs time -v {native:.3f} s "
          f"(runs: {sandbox_cpu} vs {native_cpu}); max RSS {rss >> 10} KiB vs time -v {native_rss >> 10} KiB; "
          f"sandbox peak {peak >> 10} KiB")
    assert abs(cpu - native) <= 0.1 * native
    assert abs(rss - native_rss) <= 0.1 * native_rss
    assert abs(peak - native_rss) <= 0.1 * native_rss


def test_every_run_reports_its_usage(as_user: Caller, shared_dir: pathlib.Path) -> None:
    done, report = run_with_report(as_user, ["--", "sh", "-c", "exit 3"], shared_dir)
    assert done.returncode == 3 and report["exit_status"] == 3
    # the default policy's memory and pids limits: a cgroup for root
    level = root_level() if as_user.uid == 0 else "rlimit"
    assert (report["limit"], report["reason"], report["level"]) == (None, None, level)
    assert set(report["usage"]) >= {"wall_seconds", "user_seconds", "system_seconds", "max_rss_bytes",
                                    "memory_peak_bytes", "pids_peak", "write_bytes", "net_rx_bytes"}
    assert report["limits"]["files"] == 1024 and report["limits"]["memory"] == 4 << 30


def test_audit_start_event_names_the_level(root: Caller, shared_dir: pathlib.Path) -> None:
    audit = shared_dir / "audit.jsonl"
    assert root.run(["--audit", str(audit), "--pids", "64", "--", "true"]).returncode == 0
    events = {event["event"]: event for event in map(json.loads, audit.read_text().splitlines())}
    start, exit_ = events["start"], events["exit"]
    assert start["quota"]["level"] == root_level() and start["quota"]["limits"]["pids"] == 64
    assert exit_["usage"]["pids_peak"] >= 2


# --- the policy side ---------------------------------------------------------------------------

def test_limit_values_are_checked_with_their_place(world_dir: pathlib.Path) -> None:
    policy = world_dir / "bad.toml"
    policy.write_text('[viewbox]\nversion = 1\n\n[limits]\nmemory = "lots"\ncpu = 0\nwall = "10 minutes"\n'
                      'pids = 1\ndisk = -5\nrequire = "magic"\n')
    done = Caller("root").cli(["check", str(policy)])
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f'{policy}:5: [limits].memory: invalid size "lots" (a number with B, K, M, G or T, e.g. "256M"; '
        'or an integer of bytes); "unlimited" sets no limit',
        f"{policy}:6: [limits].cpu: must be between 0.01 and 4096 cores, got 0",
        f'{policy}:7: [limits].wall: invalid duration "10 minutes" (seconds, or numbers with ms, s, m or h: '
        '"90s", "1h30m"); "unlimited" sets no limit',
        f"{policy}:8: [limits].pids: must be at least 2, got 1",
        f"{policy}:9: [limits].disk: size must be from 4K to 1024T, got -5",
        f'{policy}:10: [limits].require: expected "rlimit" or "cgroup", got "magic"',
    ]


def test_limit_flags_show_and_load_back() -> None:
    done = Caller("root").cli(["show", "--memory", "256M", "--cpus", "0.5", "--pids", "64",
                               "--timeout", "1h30m", "--disk", "1G"])
    assert done.returncode == 0, done.stderr
    limits = done.stdout.split("[limits]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert limits[:5] == ["memory = 268435456  # from --memory", "cpu = 0.5  # from --cpus",
                          "pids = 64  # from --pids", "wall = 5400.0  # from --timeout",
                          "disk = 1073741824  # from --disk"]
    policy = viewbox.load_policy(None, overrides={"memory": "256M", "cpus": 0.5, "pids": 64,
                                                  "timeout": "1h30m", "disk": "1G"})
    assert (policy.limits.memory, policy.limits.cpu, policy.limits.wall) == (256 << 20, 0.5, 5400.0)


# --- 9. nothing left behind ------------------------------------------------------------------

def test_nothing_is_left_behind(host_state: dict[str, Any]) -> None:
    """Runs last: no cgroup, mount or process of this module's sandboxes remains."""
    assert wait_until(lambda: not any(live_processes(marker) for marker in MARKERS), 5)
    assert cgroups_left() <= host_state["cgroups"]
    assert mountinfo() == host_state["mounts"]


def test_disk_limit_covers_dev_shm(as_user: Caller) -> None:
    # POSIX shared memory lives in /dev/shm, a tmpfs of the sandbox's: it counts against `disk`.
    done = as_user.run(["--disk", "5M", "--", "sh", "-c",
                        "head -c 8000000 /dev/zero > /dev/shm/fill; echo status $?"])
    assert "No space left on device" in done.stderr
    assert done.stdout.strip() != "status 0"
