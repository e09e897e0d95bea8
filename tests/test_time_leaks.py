"""Ways around the time view (issue 14), each attacked: natively first, where
that shows the leak is real, then under viewbox, as root and as user nobody.

- a child cloned with CLONE_UNTRACED escapes the tracer and keeps the vDSO;
- adjtimex / clock_adjtime (modes 0) read CLOCK_REALTIME without privilege;
- the legacy [vsyscall] page's time entries;
- sources of the host's uptime, closed under [time].strict;
- file times: on the host's clock by default, on the sandbox's with [time].file_times."""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator

import pytest

from conftest import INSIDE_PYTHON, TESTS, Caller, make_world_dir

START = "2001-01-01T00:00:00Z"
START_EPOCH = 978307200
PROBES = TESTS / "time"


@pytest.fixture(scope="module")
def bins() -> Iterator[pathlib.Path]:
    """A world-readable directory with the probes, built from tests/time/."""
    path = make_world_dir(0o755, prefix="viewbox-time-leaks-")
    builds = {
        "untraced": ["-O2"],
        "vsyscall": ["-O2"],
        # no libc: nothing of it traps, it reads the vDSO and nothing else
        "vdsotime": ["-O2", "-nostdlib", "-static", "-fno-stack-protector"],
    }
    for name, flags in builds.items():
        subprocess.run(["gcc", "-Wall", *flags, "-o", str(path / name), str(PROBES / f"{name}.c")], check=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_ok(caller: Caller, args: list[str]) -> str:
    out = caller.run(args)
    assert out.returncode == 0, out.stderr
    return str(out.stdout)


def near_now(seconds: float) -> bool:
    return abs(seconds - time.time()) < 60


def in_2001(seconds: float) -> bool:
    return START_EPOCH <= seconds < START_EPOCH + 30


# --- CLONE_UNTRACED ------------------------------------------------------------------------

def test_untraced_child_reads_the_hosts_clock_natively(as_user: Caller, bins: pathlib.Path) -> None:
    """The attack works without viewbox: the child runs, its program finds the vDSO."""
    out = as_user.native([str(bins / "untraced"), "clone", str(bins / "vdsotime")])
    assert out.returncode == 0, out.stderr
    word, seconds = out.stdout.split()
    assert word == "vdso" and near_now(float(seconds)), out.stdout


def test_time_view_hides_the_vdso_from_a_traced_program(as_user: Caller, bins: pathlib.Path) -> None:
    out = run_ok(as_user, ["--ro", str(bins), "--time-start", START, "--", str(bins / "vdsotime")])
    assert out.split() == ["novdso"], out


#: a policy that lets the namespace and ptrace groups through: CLONE_UNTRACED stays refused
LOOSE = '[viewbox]\nextends = ["default"]\n\n[seccomp]\nallow = ["namespace", "ptrace"]\n'


@pytest.mark.parametrize("loose", [False, True], ids=["default", "namespace-allowed"])
@pytest.mark.parametrize("how, errno_", [("clone", 1), ("clone3", 38)])  # EPERM; ENOSYS: libc uses clone
def test_untraced_clone_is_refused(as_user: Caller, bins: pathlib.Path, world_dir: pathlib.Path, loose: bool,
                                   how: str, errno_: int) -> None:
    policy = []
    if loose:
        (world_dir / "loose.toml").write_text(LOOSE)
        policy = ["--policy", str(world_dir / "loose.toml")]
    out = run_ok(as_user, [*policy, "--ro", str(bins), "--time-start", START, "--", str(bins / "untraced"), how,
                           str(bins / "vdsotime")])
    assert out.split() == ["refused", str(errno_)], out


def test_untraced_clone_is_refused_without_a_time_view(as_user: Caller, bins: pathlib.Path) -> None:
    out = run_ok(as_user, ["--ro", str(bins), "--", str(bins / "untraced"), "clone", "/bin/true"])
    assert out.split() == ["refused", "1"], out


def test_plain_clone_and_fork_still_work(as_user: Caller) -> None:
    out = run_ok(as_user, ["--time-start", START, "--", INSIDE_PYTHON, "-c",
                           "import os, threading, subprocess; t = threading.Thread(target=print, args=('thread',)); "
                           "t.start(); t.join(); print(subprocess.run(['date', '-u', '+%Y'], "
                           "capture_output=True, text=True).stdout.strip())"])
    assert out.split() == ["thread", "2001"], out


# --- adjtimex, clock_adjtime ------------------------------------------------------------

ADJTIMEX = textwrap.dedent("""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    class Timeval(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]
    class Timex(ctypes.Structure):  # struct timex, up to its time field, then room for the rest
        _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                    ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                    ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                    ("time", Timeval), ("rest", ctypes.c_long * 20)]
    class Ntptimeval(ctypes.Structure):
        _fields_ = [("time", Timeval), ("rest", ctypes.c_long * 16)]
    def show(name, rc, seconds):
        print(name, rc if rc >= 0 else -ctypes.get_errno(), seconds)
    t = Timex()
    show("adjtimex", libc.syscall(159, ctypes.byref(t)), t.time.sec)
    t = Timex()
    show("clock_adjtime", libc.syscall(305, 0, ctypes.byref(t)), t.time.sec)
    t = Timex(modes=0xa001)  # ADJ_OFFSET_SS_READ: adjtime(NULL, &old)'s query
    show("adjtimex-ss-read", libc.syscall(159, ctypes.byref(t)), t.time.sec)
    n = Ntptimeval()
    show("ntp_gettime", libc.ntp_gettime(ctypes.byref(n)), n.time.sec)
    t = Timex(modes=0x4000)  # ADJ_TICK: sets
    show("adjtimex-set", libc.syscall(159, ctypes.byref(t)), 0)
    t = Timex(modes=0x4000)
    show("clock_adjtime-set", libc.syscall(305, 0, ctypes.byref(t)), 0)
    show("clock_adjtime-monotonic", libc.syscall(305, 1, ctypes.byref(Timex())), 0)
    show("adjtimex-fault", libc.syscall(159, ctypes.c_void_p(8)), 0)
""")


def adjtimex_results(text: str) -> dict[str, tuple[int, int]]:
    return {name: (int(rc), int(seconds)) for name, rc, seconds in (line.split() for line in text.splitlines())}


def test_adjtimex_reads_the_hosts_clock_natively(as_user: Caller) -> None:
    seen = adjtimex_results(as_user.native([INSIDE_PYTHON, "-c", ADJTIMEX]).stdout)
    for name in ("adjtimex", "clock_adjtime", "adjtimex-ss-read", "ntp_gettime"):
        assert seen[name][0] >= 0 and near_now(seen[name][1]), (name, seen)


def test_adjtimex_and_clock_adjtime_read_the_sandboxs_clock(as_user: Caller) -> None:
    seen = adjtimex_results(run_ok(as_user, ["--time-start", START, "--", INSIDE_PYTHON, "-c", ADJTIMEX]))
    for name in ("adjtimex", "clock_adjtime", "adjtimex-ss-read", "ntp_gettime"):
        rc, seconds = seen[name]
        assert 0 <= rc <= 5 and in_2001(seconds), (name, seen)  # TIME_OK..TIME_ERROR, and 2001
    assert seen["adjtimex-set"][0] == seen["clock_adjtime-set"][0] == -1, seen  # EPERM
    assert seen["clock_adjtime-monotonic"][0] == -95, seen  # EOPNOTSUPP, as natively
    assert seen["adjtimex-fault"][0] == -14, seen  # EFAULT


def test_adjtimex_follows_offset_and_rate(as_user: Caller) -> None:
    seen = adjtimex_results(run_ok(as_user, ["--time-offset", "-1d", "--time-rate", "2", "--", INSIDE_PYTHON, "-c",
                                             ADJTIMEX]))
    assert abs(seen["adjtimex"][1] - (time.time() - 86400)) < 60, seen


# --- the [vsyscall] page -----------------------------------------------------------------

def test_vsyscall_page_is_mapped_and_reads_the_hosts_clock_natively(as_user: Caller, bins: pathlib.Path) -> None:
    assert "[vsyscall]" in pathlib.Path("/proc/self/maps").read_text(), "this kernel maps the legacy page"
    out = as_user.native([str(bins / "vsyscall")])
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        assert near_now(float(line.split()[-1])), out.stdout


@pytest.mark.parametrize("flags, expect", [
    (["--time-start", START], in_2001),
    (["--time-offset", "-1d", "--time-rate", "2"], lambda s: abs(s - (time.time() - 86400)) < 60),
])
def test_vsyscall_time_entries_follow_the_view(as_user: Caller, bins: pathlib.Path, flags: list[str],
                                               expect: object) -> None:
    out = run_ok(as_user, ["--ro", str(bins), *flags, "--", str(bins / "vsyscall")])
    seen = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in out.splitlines()}
    returned, stored = seen["vsyscall_time"]
    rc, seconds = seen["vsyscall_gettimeofday"]
    assert rc == 0, out
    for value in (returned, stored, seconds):
        assert callable(expect) and expect(value), out


# --- the host's uptime, under [time].strict --------------------------------------------------

UPTIME_SOURCES = textwrap.dedent("""
    import os
    def show(name, path, dir_fd=None):
        try:
            fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
        except OSError as e:
            print(name, "refused", e.errno)
            return
        text = os.read(fd, 65536).decode()
        os.close(fd)
        fields = {line.split(":")[0].strip(): line.split(":")[-1] for line in text.splitlines() if ":" in line}
        if "se.exec_start" in fields:
            print(name, "ms", float(fields["se.exec_start"]))
        elif path.endswith("timens_offsets"):
            print(name, "s", -int(text.split()[1]))
        elif path.endswith("uptime"):
            print(name, "s", float(text.split()[1]))  # the idle field
        else:
            print(name, "ns", int(text.split()[0]) + int(text.split()[1]))  # schedstat: run + wait
    show("self-sched", "/proc/self/sched")
    show("thread-self-sched", "/proc/thread-self/sched")
    show("pid-sched", f"/proc/{os.getpid()}/sched")
    show("task-sched", f"/proc/{os.getpid()}/task/{os.getpid()}/sched")
    show("init-schedstat", "/proc/1/schedstat")
    show("task-schedstat", f"/proc/self/task/{os.getpid()}/schedstat")
    proc_self = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY)
    show("dirfd-sched", "sched", dir_fd=proc_self)
    os.chdir("/proc/self/task")
    show("relative-sched", f"{os.getpid()}/sched")
    show("timens_offsets", "/proc/self/timens_offsets")
    show("uptime-idle", "/proc/uptime")
    print("times", "s", os.times().elapsed)
    cpu = next(line for line in open("/proc/stat") if line.startswith("cpu "))
    print("stat-cpu", "s", sum(int(n) for n in cpu.split()[1:]) / 100)
""")


def uptime_sources(text: str) -> dict[str, tuple[str, float]]:
    out = {}
    for line in text.splitlines():
        name, kind, value = line.split()
        out[name] = (kind, float(value))
    return out


def host_seconds(kind: str, value: float) -> float:
    return value / {"ms": 1e3, "ns": 1e9, "s": 1}[kind]


STRICT = '[viewbox]\nextends = ["default"]\n\n[time]\nstrict = true\nstart = 2001-01-01T00:00:00Z\n'


def test_uptime_sources_show_the_hosts_uptime_natively(as_user: Caller) -> None:
    host_uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
    assert host_uptime > 60, "the host has been up for a while"
    seen = uptime_sources(as_user.native([INSIDE_PYTHON, "-c", UPTIME_SOURCES]).stdout)
    assert host_seconds(*seen["self-sched"]) > host_uptime * 0.9, seen  # exec_start: ms since boot
    assert seen["times"][1] > host_uptime, seen  # ticks since boot (plus the kernel's 5 min)
    assert seen["stat-cpu"][1] > host_uptime * 0.9, seen  # every CPU's ticks since boot


def test_time_namespace_does_not_shift_the_scheduler_clock(as_user: Caller) -> None:
    """Why strict is needed: under a plain time view these still show the host's uptime."""
    host_uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
    seen = uptime_sources(run_ok(as_user, ["--time-start", START, "--", INSIDE_PYTHON, "-c", UPTIME_SOURCES]))
    for name in ("self-sched", "timens_offsets"):
        assert host_seconds(*seen[name]) > host_uptime * 0.9, (name, seen)


@pytest.mark.parametrize("allow_proc", [False, True], ids=["strict", "strict-and-allow-proc"])
def test_strict_closes_the_uptime_sources(as_user: Caller, world_dir: pathlib.Path, allow_proc: bool) -> None:
    policy = world_dir / "strict.toml"
    # an allow rule of the policy's own does not lift strict's refusals
    policy.write_text(STRICT + ('\n[fs]\nallow = ["read:/proc/**"]\n' if allow_proc else ""))
    seen = uptime_sources(run_ok(as_user, ["--policy", str(policy), "--", INSIDE_PYTHON, "-c", UPTIME_SOURCES]))
    for name in ("self-sched", "thread-self-sched", "pid-sched", "task-sched", "init-schedstat", "task-schedstat",
                 "dirfd-sched", "relative-sched", "timens_offsets", "uptime-idle"):
        assert seen[name] == ("refused", 13), (name, seen)  # EACCES
    assert 0.5 <= seen["times"][1] < 10, seen  # ticks since the sandbox's boot, at 1 s
    assert seen["stat-cpu"][1] == 0, seen


def test_strict_needs_a_proc_to_hide_in(as_user: Caller, world_dir: pathlib.Path) -> None:
    """Without the sandbox's /proc there is nothing to hide: no path rules, no interposition."""
    policy = world_dir / "strict.toml"
    policy.write_text(STRICT + "\n[fs]\nproc = false\n")
    out = run_ok(as_user, ["--policy", str(policy), "--", INSIDE_PYTHON, "-c", "import os; print(os.times().elapsed)"])
    assert 0.5 <= float(out) < 10, out


# --- file times on the sandbox's clock ------------------------------------------------------

MAKEFILE = "prog: main.o f.o\n\tcc -o prog main.o f.o\n%.o: %.c\n\tcc -c $<\n"


def file_times_policy(where: pathlib.Path, value: str, clock: str = 'offset = "-1d"') -> pathlib.Path:
    policy = where / f"file-times-{value}.toml"
    policy.write_text(f'[viewbox]\nextends = ["default"]\n\n[time]\n{clock}\nfile_times = "{value}"\n')
    return policy


def two_file_project(where: pathlib.Path) -> pathlib.Path:
    project = where / "project"
    project.mkdir()
    (project / "main.c").write_text("int f(void);\nint main(void) { return f(); }\n")
    (project / "f.c").write_text("int f(void) { return 0; }\n")
    (project / "Makefile").write_text(MAKEFILE)
    for path in project.iterdir():
        path.chmod(0o666)  # user nobody touches them too
    project.chmod(0o777)
    return project


#: (the kernel stamps files from a clock that moves once a tick: the touch waits for the next)
BUILD = ("make 2>&1; echo ==; make 2>&1; echo ==; sleep 0.1; touch f.c; echo $(stat -c %Y f.c) $(date +%s); "
         "echo ==; make 2>&1")


def test_make_under_an_offset_sees_clock_skew_with_host_file_times(as_user: Caller,
                                                                    shared_dir: pathlib.Path) -> None:
    """The problem: files stamped by the host's clock are a day in the sandbox's future."""
    project = two_file_project(shared_dir)
    out = run_ok(as_user, ["--policy", str(file_times_policy(shared_dir, "host")), "--rw", str(project),
                           "--workdir", str(project), "--", "sh", "-c", BUILD])
    first, second, stamps, third = out.split("==\n")
    assert "Clock skew detected" in first + second, out
    # touch sets the sandbox's "now": a day before the objects the kernel stamped, so the touched
    # file is not rebuilt
    assert "cc -c f.c" not in third, out


def test_make_builds_twice_without_clock_skew_with_sandbox_file_times(as_user: Caller,
                                                                       shared_dir: pathlib.Path) -> None:
    project = two_file_project(shared_dir)
    out = run_ok(as_user, ["--policy", str(file_times_policy(shared_dir, "sandbox")), "--rw", str(project),
                           "--workdir", str(project), "--", "sh", "-c", BUILD])
    first, second, stamps, third = out.split("==\n")
    assert "skew" not in out and "in the future" not in out, out
    assert "cc -o prog" in first, out
    assert second.strip() == "make: 'prog' is up to date.", out  # the second build does nothing
    mtime, now = (int(n) for n in stamps.split())
    assert abs(mtime - now) <= 1, out  # touch then stat agree
    assert "cc -c f.c" in third and "cc -c main.c" not in third, out  # only what changed is rebuilt
    host_mtime = (project / "prog").stat().st_mtime
    assert near_now(host_mtime), "on the host the files keep the host's times"


#: Sets explicit times by every call that takes them, reads them back by every call that returns them.
FILE_TIMES = textwrap.dedent("""
    import ctypes, os, subprocess, sys
    libc = ctypes.CDLL(None, use_errno=True)
    path = sys.argv[1]
    open(path, "w").close()
    atime, mtime = 1000000000123456789, 1000000100987654321  # in 2001, to the ns
    os.utime(path, ns=(atime, mtime))  # utimensat
    st = os.stat(path)  # newfstatat
    fd = os.open(path, os.O_RDONLY)
    fst = os.fstat(fd)
    lst = os.lstat(path)
    statx = subprocess.run(["stat", "-c", "%.9Y", path], capture_output=True, text=True).stdout.strip()
    print("utimensat", st.st_atime_ns, st.st_mtime_ns, fst.st_mtime_ns, lst.st_mtime_ns, statx.replace(".", ""))
    class Timeval(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]
    tv = (Timeval * 2)(Timeval(1000000000, 250000), Timeval(1000000200, 750000))
    assert libc.utimes(path.encode(), tv) == 0
    print("utimes", os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns)
    class Utimbuf(ctypes.Structure):
        _fields_ = [("actime", ctypes.c_long), ("modtime", ctypes.c_long)]
    assert libc.syscall(132, path.encode(), ctypes.byref(Utimbuf(1000000300, 1000000400))) == 0  # utime
    print("utime", os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns)
""")


def test_explicit_file_times_read_back_exactly(as_user: Caller, shared_dir: pathlib.Path) -> None:
    policy = file_times_policy(shared_dir, "sandbox")
    target = shared_dir / "stamped"
    out = run_ok(as_user, ["--policy", str(policy), "--rw", str(shared_dir), "--", INSIDE_PYTHON, "-c",
                           FILE_TIMES, str(target)])
    seen = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in out.splitlines()}
    m = 1000000100987654321
    assert seen["utimensat"] == [1000000000123456789, m, m, m, m], out  # stat, fstat, lstat, statx
    assert seen["utimes"] == [1000000000250000000, 1000000200750000000], out
    # utime's seconds land on the host's clock to the ns; read back they are whole seconds again
    # only if the offset is whole seconds: "-1d" is
    assert seen["utime"] == [1000000300 * 10**9, 1000000400 * 10**9], out
    assert target.stat().st_mtime_ns == 1000000400 * 10**9 + 86400 * 10**9, "the host keeps a day later"


def test_file_times_follow_the_clock_line_at_another_rate(as_user: Caller, shared_dir: pathlib.Path) -> None:
    old = shared_dir / "old"
    old.write_text("")
    before = time.time() - 1000
    os.utime(old, (before, before))
    policy = file_times_policy(shared_dir, "sandbox", clock=f'start = "{START}"\nrate = 2.0')
    out = run_ok(as_user, ["--policy", str(policy), "--rw", str(shared_dir), "--", "sh", "-c",
                           f"sleep 1; echo {shared_dir}/new > {shared_dir}/new; "
                           f"stat -c %Y {old} {shared_dir}/new; date +%s"])
    old_seen, new_seen, now = (int(n) for n in out.split())
    # before the start: shifted by the offset at the start, so 1000 s before the sandbox's start
    assert abs(old_seen - (START_EPOCH - 1000)) <= 3, out
    # after it: on the clock's line, written at about the sandbox's now (2 s in, at rate 2)
    assert START_EPOCH + 1 <= new_seen <= now <= START_EPOCH + 10, out


@pytest.mark.parametrize("value, on_sandbox_clock", [(None, False), ("sandbox", True), ("host", False)])
def test_with_path_rules_the_supervisor_maps_file_times(as_user: Caller, shared_dir: pathlib.Path,
                                                        value: str | None, on_sandbox_clock: bool) -> None:
    """Path rules send the stat family to the supervisor: it maps the times of its answers when
    file_times = "sandbox" is set (by default the times stay the host's, as without rules)."""
    project = two_file_project(shared_dir)
    policy = shared_dir / "rules.toml"
    policy.write_text('[viewbox]\nextends = ["default"]\n\n[fs]\ndeny = ["/nowhere/**"]\n\n[time]\noffset = "-1d"\n'
                      + (f'file_times = "{value}"\n' if value else ""))
    out = run_ok(as_user, ["--policy", str(policy), "--rw", str(project), "--workdir", str(project), "--",
                           INSIDE_PYTHON, "-c", "import os, time; open('set', 'w').close(); "
                           "os.utime('set', ns=(10**18, 10**18 + 5)); open('new', 'w').close(); "
                           "fd = os.open('new', os.O_RDONLY); "
                           "print(os.stat('set').st_mtime_ns, os.stat('new').st_mtime - time.time(), "
                           "os.fstat(fd).st_mtime - time.time())"])
    utime_ns, stat_ahead, fstat_ahead = out.split()
    if on_sandbox_clock:
        assert int(utime_ns) == 10**18 + 5, out  # set and read back on the sandbox's clock, exactly
        assert abs(float(stat_ahead)) < 60 and abs(float(fstat_ahead)) < 60, out  # written just now
    else:
        assert abs(float(stat_ahead) - 86400) < 60, out  # the host's stamp: a day in the future
    host_mtime_ns = (project / "set").stat().st_mtime_ns
    assert host_mtime_ns == 10**18 + 5 + (86400 * 10**9 if on_sandbox_clock else 0), "the host keeps its clock"


def test_file_times_with_an_audit_alone_is_an_error(shared_dir: pathlib.Path) -> None:
    policy = file_times_policy(shared_dir, "sandbox")
    out = Caller("root").run(["--policy", str(policy), "--audit", str(shared_dir / "audit.jsonl"), "--", "true"])
    assert out.returncode != 0 and "does not work with an audit unless the policy has path rules" in out.stderr, \
        out.stderr


def test_file_times_value_is_checked(shared_dir: pathlib.Path) -> None:
    policy = shared_dir / "bad.toml"
    policy.write_text('[viewbox]\nversion = 1\n\n[time]\nfile_times = "guest"\n')
    out = Caller("root").cli(["check", str(policy)])
    assert out.returncode != 0 and f'{policy}:5: [time].file_times: unknown file_times "guest"' in out.stderr, \
        out.stderr


def test_show_syscalls_lists_the_leak_rows(shared_dir: pathlib.Path) -> None:
    strict = shared_dir / "strict.toml"
    strict.write_text(STRICT)
    plain = Caller("root").cli(["show", "--syscalls", "--time-offset", "-1d"])
    strict_out = Caller("root").cli(["show", "--syscalls", "--policy", str(strict)])
    files = Caller("root").cli(["show", "--syscalls", "--policy", str(file_times_policy(shared_dir, "sandbox"))])
    assert plain.returncode == strict_out.returncode == files.returncode == 0
    assert "#   clone                [always] CLONE_UNTRACED" in plain.stdout
    assert "#   clone3               [always]" in plain.stdout
    assert "#   adjtimex" in plain.stdout and "#   times" not in plain.stdout and "#   statx" not in plain.stdout
    # strict traps times(); file times stay the host's unless file_times says otherwise
    assert "#   times" in strict_out.stdout and "#   statx" not in strict_out.stdout
    assert "#   statx" in files.stdout and "#   utimes" in files.stdout


GO_STAT = """
package main

import (
\t"fmt"
\t"os"
\t"time"
)

func main() {
\tos.WriteFile(os.Args[1], []byte("x"), 0644)
\tbyPath, _ := os.Stat(os.Args[1])
\tf, _ := os.Open(os.Args[1])
\tbyFd, _ := f.Stat()
\tnow := time.Now()
\tfmt.Println(byPath.ModTime().Sub(now).Seconds(), byFd.ModTime().Sub(now).Seconds())
}
"""


@pytest.mark.skipif(not shutil.which("go"), reason="golang-go is not installed (.ci/run installs it)")
def test_static_go_program_sees_file_times_on_the_sandboxs_clock(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """Go makes the stat system calls itself (fstat, newfstatat), without libc."""
    source = shared_dir / "stat.go"
    source.write_text(GO_STAT)
    env = {**os.environ, "CGO_ENABLED": "0", "GOCACHE": str(shared_dir / "gocache"), "GO111MODULE": "off"}
    subprocess.run(["go", "build", "-o", str(shared_dir / "gostat"), str(source)], check=True, env=env, cwd=shared_dir)
    shutil.rmtree(shared_dir / "gocache", ignore_errors=True)
    args = ["--rw", str(shared_dir), "--", str(shared_dir / "gostat"), str(shared_dir / "written")]
    by_path, by_fd = (float(n) for n in run_ok(as_user, ["--policy", str(file_times_policy(shared_dir, "sandbox")),
                                                         *args]).split())
    assert abs(by_path) < 5 and abs(by_fd) < 5, (by_path, by_fd)
    by_path, by_fd = (float(n) for n in run_ok(as_user, ["--policy", str(file_times_policy(shared_dir, "host")),
                                                         *args]).split())
    assert abs(by_path - 86400) < 5 and abs(by_fd - 86400) < 5, (by_path, by_fd)  # a day ahead
