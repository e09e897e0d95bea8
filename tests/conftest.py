"""Shared by the behaviour, attack and policy tests: who runs viewbox, and
where the files they share with the sandbox live.

`as_user` runs every test that takes it twice: as root, and as user nobody
(uid/gid 65534, through tests/unpriv.py), each time through the real CLI
(`python -m viewbox ...`). Files the sandbox must see are put under /tmp in
directories everyone may enter; the default policy covers the host's /tmp
with a tmpfs, so a test binds such a directory in with --ro or --rw.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import unpriv
import viewbox
from unpriv import NOBODY, SYSTEM_PYTHON, run_unprivileged

TESTS = pathlib.Path(__file__).resolve().parent
ATTACKS = TESTS / "attacks"

#: The Python that commands inside the sandbox use: the default view shows the host's /usr,
#: but the interpreter running the tests may live under /root, which the view hides.
INSIDE_PYTHON = SYSTEM_PYTHON

#: The environment of native runs and of viewbox itself (the command inside gets a clean one anyway).
HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
#: The sanitizer build (README: VIEWBOX_SANITIZE=1) needs its runtime in every viewbox process,
#: and only there: a native run measured against one inside must not carry it.
SANITIZER_ENV = {k: v for k, v in os.environ.items() if k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}

# Where the viewbox under test is imported from, for root's `python -m viewbox`.
_PACKAGE_PARENT = str(pathlib.Path(viewbox.__file__).resolve().parent.parent)


def unique(label: str = "vbtest") -> str:
    """A string no other process on the machine has in its argv: finds our sandboxes in /proc."""
    return f"{label}-{uuid.uuid4().hex[:16]}"


def make_world_dir(mode: int = 0o755, prefix: str = "viewbox-test-") -> pathlib.Path:
    """A new directory under /tmp that user nobody can enter (0755) or also write (0777)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(mode)
    return path


class Caller:
    """One identity running viewbox: root or nobody.

    `cli(args)` runs `viewbox ARGS` to completion (CompletedProcess, text,
    captured, 60 s timeout, cwd /); `popen(args)` starts it; `native(argv)`
    runs a plain command as the same user, to show what works without viewbox."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.uid = 0 if name == "root" else NOBODY
        self.gid = 0 if name == "root" else NOBODY

    def __repr__(self) -> str:
        return f"Caller({self.name})"

    def user_kw(self) -> dict[str, Any]:
        return {} if self.uid == 0 else {"user": NOBODY, "group": NOBODY, "extra_groups": []}

    def viewbox_env(self, env: dict[str, str] | None) -> dict[str, str]:
        out = dict(HOST_ENV if env is None else env)
        out.update(SANITIZER_ENV)
        out["PYTHONPATH"] = _PACKAGE_PARENT if self.uid == 0 else unpriv._shared_pythonpath()
        return out

    def viewbox_argv(self, args: Sequence[str]) -> list[str]:
        python = sys.executable if self.uid == 0 else SYSTEM_PYTHON
        return [python, "-m", "viewbox", *args]

    def cli(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        return self.python(["-m", "viewbox", *args], **kw)

    def run(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """`viewbox run ARGS` (flags, then "--" and the command)."""
        return self.cli(["run", *args], **kw)

    def python(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """`python ARGS`, importing the viewbox under test (for API use as this user)."""
        if self.uid != 0:
            return run_unprivileged(list(args), **kw)
        kw["env"] = self.viewbox_env(kw.get("env"))
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        kw.setdefault("cwd", "/")
        return subprocess.run([sys.executable, *args], **kw)

    def popen(self, args: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        kw["env"] = self.viewbox_env(kw.get("env"))
        kw.setdefault("cwd", "/")
        return subprocess.Popen(self.viewbox_argv(args), **self.user_kw(), **kw)

    def native(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        kw.setdefault("env", dict(HOST_ENV))
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        kw.setdefault("cwd", "/")
        return subprocess.run(list(argv), **self.user_kw(), **kw)


@pytest.fixture(params=["root", "nobody"])
def as_user(request: pytest.FixtureRequest) -> Caller:
    """The CLI as root and as user nobody (tests taking this run once for each)."""
    assert os.geteuid() == 0, "the suite runs as root: it also runs everything as user nobody"
    return Caller(request.param)


@pytest.fixture
def world_dir() -> Iterator[pathlib.Path]:
    """A fresh directory under /tmp that everyone may enter and read (0755)."""
    path = make_world_dir(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shared_dir() -> Iterator[pathlib.Path]:
    """A fresh directory under /tmp that everyone may write (0777): for --rw and audit files."""
    path = make_world_dir(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- processes ------------------------------------------------------------------

def cmdline(pid: str | int) -> bytes:
    """/proc/PID/cmdline, or b"" once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def live_processes(marker: str) -> list[int]:
    """Host pids of live (not zombie) processes with `marker` in their argv, this one excepted.

    A sandbox's init is a clone of the viewbox process but overwrites its copy
    of viewbox's argv (/proc/1/cmdline reads "viewbox-init"): it does not show up."""
    needle = marker.encode()
    own = os.getpid()
    return sorted(int(pid) for pid in os.listdir("/proc")
                  if pid.isdigit() and int(pid) != own and needle in cmdline(pid)
                  and _state(pid) not in ("Z", "X", "gone"))


def wait_until(condition: Any, timeout: float, interval: float = 0.01) -> bool:
    """Polls `condition()` until it is true or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


def stop(proc: subprocess.Popen[Any]) -> None:
    """Ends a Popen the test started, whatever state it is in."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def mountinfo() -> list[str]:
    """The host's mount table, without the mount ids (which a remount would change)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split(" ", 2)[2] for line in f)
