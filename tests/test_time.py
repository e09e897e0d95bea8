"""The time view ([time], --time-*): each sandbox gets its own clock, read the
same through every source (glibc through the vDSO, raw system calls, Python,
a static Go binary, /proc), and sleeps and timers follow its rate. Each
probe runs natively too where that shows it would read the host's time."""
from __future__ import annotations

import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from conftest import INSIDE_PYTHON, TESTS, Caller, make_world_dir

START = "2009-04-21T12:00:00Z"
START_EPOCH = 1240315200
PROBE_SOURCE = TESTS / "time" / "timeprobe.c"
GO_NOW = """
package main

import (
\t"fmt"
\t"time"
)

func main() { fmt.Println(time.Now().UTC().Format("2006-01-02T15:04:05")) }
"""
#: Sleeps, then waits for a timer (Go's runtime: epoll_pwait and futex timeouts), prints how long that took.
GO_SLEEP = """
package main

import (
	"fmt"
	"time"
)

func main() {
	start := time.Now()
	time.Sleep(1500 * time.Millisecond)
	<-time.NewTimer(500 * time.Millisecond).C
	fmt.Println(time.Since(start).Seconds())
}
"""


@pytest.fixture(scope="module")
def bins() -> Iterator[pathlib.Path]:
    """A world-readable directory with the probe (dynamic, glibc) and a static Go binary."""
    path = make_world_dir(0o755, prefix="viewbox-time-")
    subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(path / "timeprobe"), str(PROBE_SOURCE)], check=True)
    if shutil.which("go"):
        (path / "now.go").write_text(GO_NOW)
        env = {**os.environ, "CGO_ENABLED": "0", "GOCACHE": str(path / "gocache"), "GOPATH": str(path / "gopath"),
               "GO111MODULE": "off"}
        subprocess.run(["go", "build", "-o", str(path / "gonow"), str(path / "now.go")], check=True, env=env,
                       cwd=path)
        (path / "sleep.go").write_text(GO_SLEEP)
        subprocess.run(["go", "build", "-o", str(path / "gosleep"), str(path / "sleep.go")], check=True, env=env,
                       cwd=path)
        shutil.rmtree(path / "gocache", ignore_errors=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def values(text: str) -> dict[str, float]:
    """"NAME SECONDS" lines -> {NAME: seconds}."""
    return {name: float(value) for name, value in (line.split() for line in text.splitlines() if line.strip())}


def run_ok(caller: Caller, args: list[str]) -> str:
    out = caller.run(args)
    assert out.returncode == 0, out.stderr
    return str(out.stdout)


# --- 1. a start instant, read by every kind of program ---------------------------------

def test_date_starts_at_the_instant(as_user: Caller) -> None:
    out = run_ok(as_user, ["--time-start", START, "--", "date", "-u", "+%FT%T"])
    assert out.startswith("2009-04-21T12:00:0"), out
    assert not as_user.native(["date", "-u", "+%FT%T"]).stdout.startswith("2009")


def test_python_sees_the_instant(as_user: Caller) -> None:
    script = "import time, datetime; print(time.time()); print(datetime.datetime.now(datetime.timezone.utc).isoformat())"
    out = run_ok(as_user, ["--time-start", START, "--", INSIDE_PYTHON, "-c", script]).split()
    assert START_EPOCH <= float(out[0]) < START_EPOCH + 5, out
    assert out[1].startswith("2009-04-21T12:00:0"), out


def test_c_program_through_the_vdso_sees_the_instant(as_user: Caller, bins: pathlib.Path) -> None:
    native = values(as_user.native([str(bins / "timeprobe"), "now"]).stdout)
    assert native["REALTIME"] > START_EPOCH + 10 * 365 * 86400  # the host's own time, natively
    inside = values(run_ok(as_user, ["--ro", str(bins), "--time-start", START, "--",
                                     str(bins / "timeprobe"), "now"]))
    for name in ("REALTIME", "REALTIME_COARSE", "REALTIME_SYSCALL", "GETTIMEOFDAY", "TIME", "TIME_SYSCALL"):
        assert START_EPOCH <= inside[name] < START_EPOCH + 5, (name, inside)


@pytest.mark.skipif(not shutil.which("go"), reason="golang-go is not installed (.ci/run installs it)")
def test_static_go_program_sees_the_instant(as_user: Caller, bins: pathlib.Path) -> None:
    native = as_user.native([str(bins / "gonow")]).stdout
    assert not native.startswith("2009"), native
    out = run_ok(as_user, ["--ro", str(bins), "--time-start", START, "--", str(bins / "gonow")])
    assert out.startswith("2009-04-21T12:00:0"), out


# --- 2. an offset ------------------------------------------------------------------

def test_offset_one_day_behind(as_user: Caller) -> None:
    before = time.time()
    inside = float(run_ok(as_user, ["--time-offset", "-1d", "--", "date", "+%s"]))
    after = time.time()
    assert before - 86400 - 2 <= inside <= after - 86400 + 2, (before, inside)


# --- 3. a rate ---------------------------------------------------------------------------

def test_rate_ten_sleep_five(as_user: Caller) -> None:
    started = time.monotonic()
    out = run_ok(as_user, ["--time-rate", "10", "--", "sh", "-c", "date +%s.%N; sleep 5; date +%s.%N"]).split()
    real = time.monotonic() - started
    advanced = float(out[1]) - float(out[0])
    assert 5.0 <= advanced < 5.8, out
    assert real < 3.0, real  # 0.5 s of sleep, plus starting viewbox (natively: 5 s)


def test_rate_ten_python_sleep_and_timerfd(as_user: Caller, bins: pathlib.Path) -> None:
    script = textwrap.dedent("""
        import time
        t, m = time.time(), time.monotonic()
        time.sleep(2)
        print(time.time() - t, time.monotonic() - m)
    """)
    started = time.monotonic()
    out = run_ok(as_user, ["--ro", str(bins), "--time-rate", "10", "--", "sh", "-c",
                           f"{INSIDE_PYTHON} -c '{script}' && {bins}/timeprobe timerfd 2"]).split()
    real = time.monotonic() - started
    wall, mono, timer_mono, timer_real = map(float, out)
    assert 2.0 <= wall < 2.6 and 2.0 <= mono < 2.6, out
    assert 2.0 <= timer_mono < 2.6 and 2.0 <= timer_real < 2.6, out
    assert real < 3.5, real  # 0.2 s + 0.2 s of waiting, plus two starts (natively: 4 s)


#: Each kind of wait with a timeout of 2 s of the sandbox's time, as "NAME VIRTUAL-SECONDS".
WAITS = textwrap.dedent("""
    import select, signal, socket, time
    def took(name, wait):
        start = time.monotonic()
        wait()
        print(name, time.monotonic() - start)
    a, b = socket.socketpair()
    poller = select.poll(); poller.register(a, select.POLLIN)
    took("poll", lambda: poller.poll(2000))
    took("select", lambda: select.select([a], [], [], 2))
    ep = select.epoll(); ep.register(a.fileno(), select.EPOLLIN)
    took("epoll_wait", lambda: ep.poll(2))
    signal.signal(signal.SIGALRM, lambda *_: None)
    def alarm():
        signal.alarm(2); signal.pause()
    took("alarm", alarm)
    def itimer():
        signal.setitimer(signal.ITIMER_REAL, 2); signal.pause()
    took("setitimer", itimer)
""")


def test_rate_ten_timeouts_and_alarms(as_user: Caller) -> None:
    started = time.monotonic()
    out = run_ok(as_user, ["--time-rate", "10", "--", INSIDE_PYTHON, "-c", WAITS])
    real = time.monotonic() - started
    seen = values(out)
    assert set(seen) == {"poll", "select", "epoll_wait", "alarm", "setitimer"}, out
    for name, virtual in seen.items():
        assert 1.95 <= virtual < 2.6, (name, virtual)
    assert real < 3.5, real  # five waits of 0.2 s, and starting viewbox (natively: 10 s)


@pytest.mark.parametrize("flags, real_range", [
    (["--time-start", START], (1.9, 3.5)),               # a deadline in 2009, on the host's clock: no wait at all
    (["--time-start", "2039-04-21T12:00:00Z"], (1.9, 3.5)),  # ... or one 13 years long
    (["--time-rate", "10"], (0.0, 1.5)),
])
def test_timed_condition_wait_means_the_sandboxs_seconds(as_user: Caller, bins: pathlib.Path,
                                                         flags: list[str], real_range: tuple[float, float]) -> None:
    started = time.monotonic()
    out = run_ok(as_user, ["--ro", str(bins), *flags, "--", str(bins / "timeprobe"), "condwait", "2"]).split()
    real = time.monotonic() - started
    assert out[0] == "110", out  # ETIMEDOUT
    assert 1.95 <= float(out[1]) < 2.6, out  # the deadline was taken a moment before "before"
    assert real_range[0] <= real < real_range[1], real


def test_remaining_times_are_in_the_sandboxs_seconds(as_user: Caller, bins: pathlib.Path) -> None:
    native = as_user.native([str(bins / "timeprobe"), "remaining"]).stdout.split()
    out = run_ok(as_user, ["--ro", str(bins), "--time-rate", "10", "--", str(bins / "timeprobe"),
                           "remaining"]).split()
    for seen in (native, out):
        timerfd_left, itimer_left, err, rem = seen
        assert 4.9 <= float(timerfd_left) <= 5.0 and 4.9 <= float(itimer_left) <= 5.0, seen
        assert err == "4" and 3.8 <= float(rem) <= 4.05, seen  # EINTR after 1 s of 5 (scaled, within 0.01 s)


# --- 4. frozen ---------------------------------------------------------------------------

def test_frozen_clock_stands_still_while_busy(as_user: Caller, bins: pathlib.Path) -> None:
    started = time.monotonic()
    out = run_ok(as_user, ["--ro", str(bins), "--time-frozen", "--", str(bins / "timeprobe"), "spin", "1"]).split()
    assert time.monotonic() - started >= 1.0
    before, after, mono_before, mono_after = out
    assert before == after and mono_before == mono_after, out  # 1 s of CPU (real) time apart


def test_frozen_clock_jumps_by_the_sleeps(as_user: Caller) -> None:
    script = "import time; a = time.time(); time.sleep(30); print(time.time() - a)"
    started = time.monotonic()
    out = run_ok(as_user, ["--time-frozen", "--", INSIDE_PYTHON, "-c", script])
    assert float(out) == pytest.approx(30.0, abs=1e-6), out
    assert time.monotonic() - started < 5, "a frozen sandbox's sleep takes no real time"


def test_timed_waits_at_rate_1_last_as_long(as_user: Caller) -> None:
    """At rate 1 a relative or MONOTONIC timeout means the same in the sandbox's time, so those
    waits run natively (only REALTIME deadlines go to the init); they must still last as long,
    on both clocks."""
    script = textwrap.dedent("""
        import threading, time
        lock = threading.Lock(); lock.acquire()
        t, m = time.time(), time.monotonic()
        got = lock.acquire(timeout=0.4)  # sem_clockwait on CLOCK_MONOTONIC: a MONOTONIC deadline
        print(got, time.time() - t, time.monotonic() - m)
    """)
    started = time.monotonic()
    out = run_ok(as_user, ["--time-offset", "-1d", "--", INSIDE_PYTHON, "-c", script]).split()
    real = time.monotonic() - started
    assert out[0] == "False" and 0.39 <= float(out[1]) < 1.0 and 0.39 <= float(out[2]) < 1.0, out
    assert real >= 0.4, real


@pytest.mark.parametrize("flag", ["--time-start=" + START, "--time-offset=-1d"])
def test_absolute_realtime_deadlines_at_rate_1_are_the_sandboxs(as_user: Caller, flag: str) -> None:
    """An absolute CLOCK_REALTIME deadline (clock_nanosleep TIMER_ABSTIME, a timerfd with
    TFD_TIMER_ABSTIME) half a second ahead on the sandbox's clock is half a second away: on the
    host's clock it has long passed, and the wait would end at once."""
    script = textwrap.dedent("""
        import ctypes, os, time
        libc = ctypes.CDLL(None, use_errno=True)
        class TS(ctypes.Structure):
            _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
        class ITS(ctypes.Structure):
            _fields_ = [("interval", TS), ("value", TS)]
        def ahead(secs):
            at = time.time() + secs
            return TS(int(at), int(at % 1 * 1e9))
        t = time.monotonic()
        rc = libc.clock_nanosleep(0, 1, ctypes.byref(ahead(0.5)), None)  # REALTIME, TIMER_ABSTIME
        slept = time.monotonic() - t
        fd = libc.timerfd_create(0, 0)  # CLOCK_REALTIME
        t = time.monotonic()
        libc.timerfd_settime(fd, 1, ctypes.byref(ITS(TS(0, 0), ahead(0.5))), None)  # TFD_TIMER_ABSTIME
        os.read(fd, 8)
        print(rc, slept, time.monotonic() - t)
    """)
    out = run_ok(as_user, [flag, "--", INSIDE_PYTHON, "-c", script]).split()
    assert out[0] == "0" and 0.45 <= float(out[1]) < 1.5 and 0.45 <= float(out[2]) < 1.5, out


def test_frozen_event_loops_reach_their_timers(as_user: Caller) -> None:
    """An event loop waits for its next timer with a timeout: frozen, that wait must move the
    clock to the timer, or the loop would wait forever."""
    script = textwrap.dedent("""
        import asyncio, threading, time
        async def main():
            t = time.monotonic()
            await asyncio.sleep(0.5)
            return time.monotonic() - t
        print(asyncio.run(main()))
        lock = threading.Lock(); lock.acquire()
        t = time.time()
        print(lock.acquire(timeout=0.3), time.time() - t)
    """)
    out = run_ok(as_user, ["--time-frozen", "--", INSIDE_PYTHON, "-c", script]).split()
    assert float(out[0]) == pytest.approx(0.5, abs=1e-6), out
    assert out[1] == "False" and float(out[2]) == pytest.approx(0.3, abs=1e-6), out


@pytest.mark.skipif(not shutil.which("go"), reason="golang-go is not installed (.ci/run installs it)")
@pytest.mark.parametrize("flag, virtual_range, real_range", [
    # frozen: Go's runtime also sleeps in a background thread (sysmon), and every sleep moves a
    # frozen clock at once, so the clock may run ahead of the timers while the program waits (by
    # 0 to over 100 s here, however the clock is read); what matters is that it gets there, and
    # does not wait forever
    ("--time-frozen", (2.0, math.inf), (0.0, 5.0)),
    ("--time-rate=10", (2.0, 2.3), (0.0, 1.6)),
    # at rate 1 its futex waits have relative timeouts: the filter lets them through untouched
    ("--time-offset=-1d", (2.0, 2.3), (1.9, 3.5)),
])
def test_static_go_program_sleeps_in_the_sandboxs_time(as_user: Caller, bins: pathlib.Path, flag: str,
                                                       virtual_range: tuple[float, float],
                                                       real_range: tuple[float, float]) -> None:
    started = time.monotonic()
    out = run_ok(as_user, ["--ro", str(bins), flag, "--", str(bins / "gosleep")])
    real = time.monotonic() - started
    assert virtual_range[0] <= float(out) < virtual_range[1], out
    assert real_range[0] <= real < real_range[1], real


# --- 5. every source agrees ----------------------------------------------------------------

def test_uptime_and_monotonic_agree_and_start_fresh(as_user: Caller, bins: pathlib.Path) -> None:
    out = run_ok(as_user, ["--ro", str(bins), "--time-start", START, "--", "sh", "-c",
                           f"{bins}/timeprobe now; echo UPTIME $(cut -d' ' -f1 /proc/uptime)"])
    seen = values(out)
    host_uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
    assert host_uptime > 60, "the host has been up for a while"
    for name in ("MONOTONIC", "MONOTONIC_COARSE", "MONOTONIC_RAW", "BOOTTIME", "UPTIME"):
        assert 0.5 <= seen[name] < 5, (name, seen)  # the sandbox's machine was just booted
    assert abs(seen["UPTIME"] - seen["BOOTTIME"]) < 0.1, seen


#: Every documented source of the time a program inside can read, as "NAME EPOCH-SECONDS".
SOURCES = textwrap.dedent("""
    import ctypes, datetime, os, time
    libc = ctypes.CDLL(None)
    print("time.time", time.time())
    print("clock_gettime(REALTIME)", time.clock_gettime(time.CLOCK_REALTIME))
    print("clock_gettime(TAI)", time.clock_gettime(time.CLOCK_TAI))
    print("datetime.now", datetime.datetime.now(datetime.timezone.utc).timestamp())
    print("libc.time", libc.time(None))
    up = float(open("/proc/uptime").read().split()[0])
    btime = int(next(l for l in open("/proc/stat") if l.startswith("btime")).split()[1])
    print("/proc/stat btime + /proc/uptime", btime + up)
    print("btime + CLOCK_BOOTTIME", btime + time.clock_gettime(time.CLOCK_BOOTTIME))
    start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    print("btime + own start time", btime + start_ticks / os.sysconf("SC_CLK_TCK"))
    open("/tmp/f", "w").close()
    os.utime("/tmp/f")
    print("utime(now) on a file", os.stat("/tmp/f").st_mtime)
""")


def test_no_source_shows_the_hosts_time(as_user: Caller, bins: pathlib.Path) -> None:
    out = run_ok(as_user, ["--ro", str(bins), "--time-start", START, "--", INSIDE_PYTHON, "-c", SOURCES])
    out += run_ok(as_user, ["--ro", str(bins), "--time-start", START, "--", str(bins / "timeprobe"), "now"])
    out += run_ok(as_user, ["--time-start", START, "--", "sh", "-c", "echo date $(date +%s); "
                            "echo ps-lstart $(date -d \"$(ps -o lstart= -p 1)\" +%s)"])
    seen: dict[str, float] = {}
    for line in out.splitlines():
        name, _, text = line.rpartition(" ")
        seen[name] = float(text)
    assert len(seen) >= 20, seen
    for name, seconds in seen.items():
        if name in ("MONOTONIC", "MONOTONIC_COARSE", "MONOTONIC_RAW", "BOOTTIME"):
            assert seconds < 10, (name, seconds)
        else:
            assert START_EPOCH - 5 <= seconds < START_EPOCH + 10, (name, seconds)


def test_utimensat_now_is_the_sandboxs_now(as_user: Caller, shared_dir: pathlib.Path) -> None:
    run_ok(as_user, ["--rw", str(shared_dir), "--time-start", START, "--", "sh", "-c",
                     f"touch {shared_dir}/new && echo x > {shared_dir}/old && touch {shared_dir}/old"])
    for name in ("new", "old"):
        mtime = (shared_dir / name).stat().st_mtime
        assert START_EPOCH <= mtime < START_EPOCH + 10, (name, mtime)


# --- 6. two sandboxes, one process, one supervisor -------------------------------------------

def test_two_sandboxes_in_one_process_each_see_their_own(as_user: Caller) -> None:
    script = textwrap.dedent("""
        import subprocess, viewbox
        a = viewbox.Sandbox(time_start="2009-04-21T12:00:00Z", audit=True)
        b = viewbox.Sandbox(time_offset="-3650d", time_rate=2.0, audit=True)
        cmd = ["sh", "-c", "date -u +%FT%T; sleep 1; date -u +%FT%T"]
        pa = a.spawn(cmd, stdout=subprocess.PIPE)
        pb = b.spawn(cmd, stdout=subprocess.PIPE)
        serving = viewbox.core.supervisor().serving  # one supervisor thread, both sandboxes
        print(pa.communicate()[0].decode().split())
        print(pb.communicate()[0].decode().split())
        print(serving)
    """)
    out = as_user.python(["-c", script])
    assert out.returncode == 0, out.stderr
    first, second, serving = out.stdout.splitlines()
    assert serving == "2", out.stdout
    assert first.startswith("['2009-04-21T12:00:0"), first
    ten_years_ago = time.gmtime(time.time() - 3650 * 86400)
    assert second.startswith(f"['{time.strftime('%Y-%m-%d', ten_years_ago)}"), second


# --- strict: rdtsc ---------------------------------------------------------------------------

def test_strict_answers_rdtsc_from_the_sandboxs_clock(as_user: Caller, bins: pathlib.Path,
                                                      shared_dir: pathlib.Path) -> None:
    policy = shared_dir / "strict-time.toml"
    policy.write_text('[viewbox]\nextends = ["default"]\n\n[time]\nstrict = true\n')
    host_uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
    plain = as_user.run(["--ro", str(bins), "--time-start", START, "--", str(bins / "timeprobe"), "rdtsc"])
    assert plain.returncode == 0 and int(plain.stdout) > host_uptime * 1e8, plain.stderr  # the CPU's cycles
    # a dynamic program (ld.so reads the TSC at start) runs, and reads a 1 GHz count of the sandbox's uptime
    strict = run_ok(as_user, ["--policy", str(policy), "--ro", str(bins), "--", "sh", "-c",
                              f"{bins}/timeprobe rdtsc; sleep 1; {bins}/timeprobe rdtsc"])
    first, second = (int(line) for line in strict.split())
    assert 1e9 <= first < 5e9 and 0.9e9 < second - first < 3e9, strict


# --- without a time view nothing changes ---------------------------------------------------------

VDSO_PROBE = textwrap.dedent("""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.getauxval.restype = ctypes.c_ulong
    mapped = [line.split()[-1] for line in open("/proc/self/maps") if "[vdso]" in line or "[vvar" in line]
    # arch_prctl(ARCH_MAP_VDSO_64, addr): would map the vDSO (and the clock data) again
    remap = libc.syscall(158, 0x2003, ctypes.c_ulong(0x7f0000000000))
    err = ctypes.get_errno() if remap else 0
    print(libc.getauxval(33), ",".join(mapped) or "-", remap, err)
""")


def test_without_a_time_view_the_vdso_stays(as_user: Caller) -> None:
    auxv, mapped, _, _ = run_ok(as_user, ["--", INSIDE_PYTHON, "-c", VDSO_PROBE]).split()
    assert int(auxv) != 0 and "[vdso]" in mapped, "AT_SYSINFO_EHDR: the vDSO is there, as natively"


def test_time_view_removes_the_vdso_and_its_clock_data(as_user: Caller) -> None:
    auxv, mapped, remap, err = run_ok(as_user, ["--time-offset", "-1d", "--", INSIDE_PYTHON, "-c",
                                                VDSO_PROBE]).split()
    assert int(auxv) == 0, "AT_SYSINFO_EHDR hidden from the program"
    assert mapped == "-", f"still mapped: {mapped}"
    assert (remap, err) == ("-1", "1"), "ARCH_MAP_VDSO_64 refused with EPERM"


# --- the policy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ('rate = 0', "[time].rate: must be between 0.001 and 1000, got 0"),
    ('rate = "fast"', '[time].rate: expected a number such as 2.0, got string "fast"'),
    ('start = "yesterday"', '[time].start: invalid instant "yesterday"'),
    ('start = "2009-04-21T12:00:00"', "[time].start: instant \"2009-04-21T12:00:00\" has no zone"),
    ('offset = "-1 day"', '[time].offset: invalid offset "-1 day"'),
    ('frozen = 1', "[time].frozen: expected a boolean, got integer 1"),
    ('start = 2009-04-21T12:00:00Z\noffset = "-1d"', "[time].offset: cannot be combined with [time].start"),
])
def test_policy_errors_name_file_line_and_field(shared_dir: pathlib.Path, body: str, message: str) -> None:
    policy = shared_dir / "bad.toml"
    policy.write_text(f"[viewbox]\nversion = 1\n\n[time]\n{body}\n")
    out = Caller("root").cli(["check", str(policy)])
    assert out.returncode != 0
    line = 5 + body.count("\n")
    assert f"{policy}:{line}: {message}" in out.stderr, out.stderr


def test_show_prints_the_time_table() -> None:
    out = Caller("root").cli(["show", "--time-offset", "-17y", "--time-rate", "2", "--time-frozen"])
    assert out.returncode == 0, out.stderr
    section = out.stdout.split("[time]", 1)[1]
    assert 'offset = "-17y"  # from --time-offset' in section
    assert "rate = 2.0  # from --time-rate" in section
    assert "frozen = true  # from --time-frozen" in section
    assert "# start: not set" in section


def test_cli_flag_errors_name_the_flag() -> None:
    out = Caller("root").run(["--time-rate", "0", "--", "true"])
    assert out.returncode != 0 and "--time-rate: must be between" in out.stderr, out.stderr


def test_show_syscalls_lists_what_the_time_view_traps() -> None:
    offset = Caller("root").cli(["show", "--syscalls", "--time-offset", "-1d"])
    rate = Caller("root").cli(["show", "--syscalls", "--time-rate", "2"])
    plain = Caller("root").cli(["show", "--syscalls"])
    assert offset.returncode == rate.returncode == plain.returncode == 0
    assert "#   clock_gettime" in offset.stdout and "#   nanosleep" not in offset.stdout
    assert "#   nanosleep" in rate.stdout and "#   epoll_wait" in rate.stdout
    assert "time view" not in plain.stdout
