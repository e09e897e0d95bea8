#!/usr/bin/env python3
"""viewbox benchmarks: viewbox side by side with native, bubblewrap and PRoot.

    python benchmarks/run.py [--quick] [--json FILE] [--dir DIR] [--checkout] [--only SECTION]

Measures, in one run and with the tools interleaved round-robin (so machine
noise falls on every column alike), the targets of DESIGN.md section 6:

  1. start-up: wall time of `viewbox run -- /bin/true` (and the same under
     native, bwrap, proot)
  2. API spawn: `box.run(["/bin/true"])` from a warm Python process
  3. import-heavy Python script: /usr/bin/python3 importing ~100 stdlib modules
  4. file-heavy shell workload: `find DIR -type f | xargs cat` over 20,000 files
  5. one interposed system call: a small C program (syscall_loop.c, built
     with gcc at run time) times fstat(fd), stat(path) and open+close(path)
     in a loop; the round trip is its time per call minus the native one;
     and, natively, the floors: a bare seccomp user-notification round trip
     (a thread answering CONTINUE), the kernel's part of any such round trip,
     and the least a race-free emulation of open and of fstat costs (a thread
     copying the path, performing the call and returning its result, with
     no rule at all); from these, the least any per-path interposer could
     add to row 4 (each file there costs one open and one fstat)
  6. the time view: ns per clock_gettime natively, under faketime and under
     viewbox --time-offset, and a time-hungry workload's ratio to native
  7. nginx serving a static file, requests/s with wrk: natively, through
     --listen and through --publish
  8. one emulated connect() (--allow-net) against a native one

viewbox is measured twice: plain (no per-path rules: nothing is interposed)
and "vb+rules", with `--deny '**/*.secret'`, a rule that matches no file of
any workload, so every file system path call is interposed, emulated and
allowed. Prints a table of medians, with ratios to native. Standard library
only. See benchmarks/README.md for how to read the table.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
TOOLS = ("native", "viewbox", "vb+rules", "bwrap", "proot")
#: ms for "true" and "api"; ratios to native for "python", "files" (plain
#: viewbox) and "files_rules" (vb+rules); µs for "roundtrip" (vb+rules fstat).
TARGETS = {"true": 40.0, "api": 5.0, "python": 1.10, "files": 1.10, "files_rules": 1.5, "roundtrip": 5.0}

#: The per-path rule of the "vb+rules" column: it matches nothing in any
#: workload, so every path call is interposed and then allowed (the cost of
#: the mechanism, not of refusing).
RULE = "**/*.secret"

#: The environment every workload starts with, whatever the tool (viewbox
#: builds its own from PATH, LANG, TERM, HOME plus --env; the others inherit
#: this one). PYTHONDONTWRITEBYTECODE keeps the pyc caches unchanged between
#: runs; PYTHONNOUSERSITE keeps the host's ~/.local out of sys.path natively,
#: as the default policy hides /root and /home inside viewbox.
WORKLOAD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": os.path.expanduser("~"),
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
}
INNER_ENV_KEYS = ("PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE")

IMPORT_HEAVY = """\
import argparse, asyncio, base64, bz2, calendar, collections, concurrent.futures
import configparser, contextlib, copy, csv, ctypes, dataclasses, datetime, decimal
import difflib, doctest, email, email.mime.multipart, email.mime.text, email.parser
import email.policy, enum, fractions, functools, gettext, gzip, hashlib, heapq, hmac
import html.parser, http.client, http.cookies, http.server, imaplib, inspect, ipaddress
import itertools, json, locale, logging, logging.handlers, lzma, mailbox, mimetypes
import multiprocessing, multiprocessing.pool, optparse, pathlib, pdb, pickle, pkgutil
import platform, plistlib, pprint, pydoc, queue, random, re, secrets, selectors, shlex
import shutil, smtplib, socket, socketserver, sqlite3, ssl, statistics, string, struct
import subprocess, tarfile, tempfile, textwrap, threading, timeit, tomllib, traceback
import typing, unittest, unittest.mock, urllib.parse, urllib.request, uuid, wave
import xml.dom.minidom, xml.etree.ElementTree, xml.sax, xmlrpc.client, zipfile, zoneinfo
"""

FILE_DIRS, FILES_PER_DIR = 200, 100

#: Section 5: the modes of syscall_loop.c and their labels in the table.
SYSCALL_MODES = {
    "fstat": ("fstat(fd)", "interposed fstat (supervisor only)"),
    "stat": ("stat(path)", "interposed stat (through the broker)"),
    "open": ("open+close(path)", "interposed open"),
}
#: the native floors of syscall_loop (the mode's loop under a bare answering thread):
#: mode -> (its native counterpart, label)
FLOOR_MODES = {
    "notify": ("fstat", "floor: bare notify -> CONTINUE, no viewbox"),
    "emulate-open": ("open", "floor: least emulated open (copy, open, ADDFD)"),
    "emulate-fstat": ("fstat", "floor: least emulated fstat (copy, getfd, put)"),
}
#: proot takes 20-120 µs a call: it makes this many times fewer calls a batch
#: (the figure is per call, so the count only changes its noise).
PROOT_CALLS_DIVISOR = 10

SECTIONS = ("true", "api", "python", "files", "syscall", "time", "nginx", "connect")

#: Row 6: the time view's columns (viewbox with --time-offset -1d, faketime with -f -1d).
TIME_COLUMNS = ("native", "faketime", "viewbox")
TIME_OFFSET = "-1d"
#: clock_gettime calls per batch: natively and under faketime; under viewbox (a trap per call) fewer
TIME_CALLS = {"native": 1_000_000, "faketime": 1_000_000, "viewbox": 20_000}
#: Row 6's workload: timestamped log lines, the way a chatty service writes them.
TIME_HUNGRY = """
import datetime, json, sys, time
out = open("/dev/null", "w")
for i in range(50_000):
    t = time.time()
    out.write(json.dumps({"ts": datetime.datetime.now().isoformat(), "n": i, "t": t}) + "\\n")
"""


# --- tools ---------------------------------------------------------------

@dataclass
class Tool:
    """How to run a command under one tool; `missing` says why it cannot."""

    name: str
    prefix: Callable[[list[str], dict[str, str]], list[str]] = field(default=lambda binds, inner_env: [])
    env: dict[str, str] = field(default_factory=lambda: dict(WORKLOAD_ENV))
    version: str = ""
    missing: str = ""
    interpreter: str = ""  # the Python that runs the tool itself, if any

    def argv(self, command: list[str], binds: Sequence[str] = (), inner_env: dict[str, str] | None = None) -> list[str]:
        return self.prefix(list(binds), inner_env or {}) + command


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _version(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    out = p.stdout + p.stderr
    m = re.search(r"\d+\.\d+(\.\d+)?", out)
    return m.group(0) if m else _first_line(out) or f"? (exit {p.returncode})"


def viewbox_launcher() -> tuple[list[str], dict[str, str], str]:
    """(argv, extra env, description) of the `viewbox` command to time.

    The installed console script when on PATH; a pyenv/asdf shim (a shell
    script adding its own start-up) is resolved to the script it stands for.
    Otherwise `python -m viewbox` on this checkout."""
    found = shutil.which("viewbox")
    if found and os.sep + "shims" + os.sep in found:
        real = os.path.join(sysconfig.get_path("scripts"), "viewbox")
        found = real if os.access(real, os.X_OK) else None
    if found:
        return [found], {}, f"console script {found}"
    return [sys.executable, "-m", "viewbox"], {"PYTHONPATH": REPO}, f"{sys.executable} -m viewbox (PYTHONPATH={REPO})"


def _shebang(path: str) -> str:
    try:
        with open(path, "rb") as f:
            first = f.readline(512).decode(errors="replace")
    except OSError:
        return ""
    return first[2:].split()[0] if first.startswith("#!") and first[2:].split() else ""


def make_tools(checkout: bool = False, extra_flags: Sequence[str] = ()) -> dict[str, Tool]:
    tools = {"native": Tool("native", version=platform.release())}

    if checkout:
        launcher, launcher_env = [sys.executable, "-m", "viewbox"], {"PYTHONPATH": REPO}
        described = f"{sys.executable} -m viewbox (PYTHONPATH={REPO}; --checkout)"
    else:
        launcher, launcher_env, described = viewbox_launcher()

    def viewbox_prefix(binds: list[str], inner_env: dict[str, str], rules: Sequence[str] = ()) -> list[str]:
        flags = [f for path in binds for f in ("--ro", path)]
        flags += [f for key, value in inner_env.items() for f in ("--env", f"{key}={value}")]
        flags += [f for glob in rules for f in ("--deny", glob)]
        return launcher + ["run"] + flags + list(extra_flags) + ["--"]

    # viewbox's own Python start must not run without its pyc cache, so the
    # workload's variables reach the command through --env, not the launcher.
    env = {k: v for k, v in WORKLOAD_ENV.items() if k not in INNER_ENV_KEYS} | launcher_env
    interpreter = sys.executable if launcher[0] == sys.executable else _shebang(launcher[0])
    tools["viewbox"] = Tool("viewbox", viewbox_prefix, env, version=described, interpreter=interpreter)
    def rules_prefix(binds: list[str], inner_env: dict[str, str]) -> list[str]:
        return viewbox_prefix(binds, inner_env, [RULE])

    tools["vb+rules"] = Tool("vb+rules", rules_prefix, env, version=f"the same CLI, with --deny '{RULE}'",
                             interpreter=interpreter)

    if shutil.which("bwrap"):
        tools["bwrap"] = Tool("bwrap", lambda binds, inner_env: [
            "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--unshare-all", "--die-with-parent"], version=_version(["bwrap", "--version"]))
    else:
        tools["bwrap"] = Tool("bwrap", missing="not installed")
    if shutil.which("proot"):
        tools["proot"] = Tool("proot", lambda binds, inner_env: ["proot", "-r", "/"],
                              version=_version(["proot", "--version"]))
    else:
        tools["proot"] = Tool("proot", missing="not installed")
    return tools


# --- measuring -----------------------------------------------------------

class RunFailed(Exception):
    pass


def timed_run(argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> float:
    """Wall seconds of one run of argv; raises RunFailed unless it exits 0."""
    start = time.perf_counter()
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"timed out after {timeout:g} s") from None
    except OSError as e:
        raise RunFailed(f"{argv[0]}: {e.strerror}") from None
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        why = _first_line(p.stderr.decode(errors="replace"))
        raise RunFailed(f"exit {p.returncode}" + (f": {why}" if why else ""))
    return elapsed


@dataclass
class Series:
    samples: list[float] = field(default_factory=list)  # in `unit`
    error: str = ""
    unit: str = "ms"

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        if len(self.samples) < 2:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=10, method="inclusive")[-1]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"runs": len(self.samples)}
        if self.error:
            out["error"] = self.error
        if self.ok:
            u = self.unit
            out.update({f"median_{u}": round(self.median, 3), f"p90_{u}": round(self.p90, 3),
                        f"samples_{u}": [round(s, 3) for s in self.samples]})
        return out


def interleave(cases: dict[str, Callable[[], float] | str], runs: int, budget: float,
               min_runs: int, label: str, warm_up: bool = True,
               caps: dict[str, int] | None = None, unit: str = "ms", scale: float = 1000) -> dict[str, Series]:
    """Times every case `runs` times, round-robin (the order rotating each
    round), after one untimed warm-up each unless `warm_up` is false. A case
    is a callable returning seconds (stored times `scale`, in `unit`: ms by
    default), or a string: an error to report, not to run. Stops early once
    `budget` seconds are spent and every case has `min_runs` samples.
    `caps` limits the rounds of named cases (a slow peer in a quick run).
    A case that fails keeps its error and drops out; the others go on."""
    caps = caps or {}
    series = {name: Series(error=case if isinstance(case, str) else "", unit=unit) for name, case in cases.items()}
    live = [name for name, case in cases.items() if not isinstance(case, str)]

    def attempt(name: str) -> float | None:
        try:
            return cases[name]()  # type: ignore[operator]
        except Exception as e:  # noqa: BLE001 - a failing tool must not stop the others
            series[name].error = str(e) or type(e).__name__
            live.remove(name)
            return None

    if warm_up:
        for name in list(live):
            attempt(name)
    start = time.monotonic()
    for i in range(runs):
        order = live[i % len(live):] + live[:i % len(live)] if live else []
        for name in order:
            if name in live and len(series[name].samples) < caps.get(name, runs):
                value = attempt(name)
                if value is not None:
                    series[name].samples.append(value * scale)
        if sys.stderr.isatty():
            print(f"\r  {label}: round {i + 1}/{runs}", end="", file=sys.stderr, flush=True)
        if time.monotonic() - start > budget and i + 1 >= min_runs:
            break
    print(("\r" if sys.stderr.isatty() else "") + f"  {label}: {time.monotonic() - start:.1f} s"
          + " " * 10, file=sys.stderr)
    return series


def tool_cases(tools: dict[str, Tool], command: list[str], cwd: str, timeout: float,
               binds: Sequence[str] = (), inner_env: dict[str, str] | None = None) -> dict[str, Callable[[], float] | str]:
    cases: dict[str, Callable[[], float] | str] = {}
    for name, tool in tools.items():
        if tool.missing:
            cases[name] = tool.missing
            continue
        argv = tool.argv(command, binds, inner_env)
        cases[name] = functools.partial(timed_run, argv, tool.env, cwd, timeout)
    return cases


def api_cases() -> dict[str, Callable[[], float] | str]:
    """box.run(["/bin/true"]) from this warm process (a Sandbox without rules,
    and one with the rule of the vb+rules column), against a plain
    subprocess.run of the same command with the same output capture."""
    def native() -> float:
        start = time.perf_counter()
        p = subprocess.run(["/bin/true"], capture_output=True)
        elapsed = time.perf_counter() - start
        if p.returncode:
            raise RunFailed(f"exit {p.returncode}")
        return elapsed

    cases: dict[str, Callable[[], float] | str] = {"native": native}
    variants: tuple[tuple[str, dict[str, Any]], ...] = (("viewbox", {}), ("vb+rules", {"deny": [RULE]}))
    for name, overrides in variants:
        try:
            import viewbox
            box = viewbox.Sandbox(**overrides)
        except Exception as e:  # noqa: BLE001
            cases[name] = f"{type(e).__name__}: {e}"
            continue

        def sandboxed(box: "viewbox.Sandbox" = box) -> float:
            start = time.perf_counter()
            result = box.run(["/bin/true"])
            elapsed = time.perf_counter() - start
            if result.returncode:
                raise RunFailed(f"exit {result.returncode}: {_first_line((result.stderr or b'').decode(errors='replace'))}")
            return elapsed

        cases[name] = sandboxed
    return cases


def build_clock_loop(work: str) -> str:
    """Compiles clock_loop.c into `work`; returns the binary's path (RunFailed if it cannot)."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clock_loop.c")
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RunFailed("no gcc (or cc) on PATH to build clock_loop.c")
    binary = os.path.join(work, "clock_loop")
    p = subprocess.run([cc, "-O2", "-Wall", "-o", binary, source], capture_output=True, text=True)
    if p.returncode:
        raise RunFailed(f"building clock_loop.c: {_first_line(p.stderr) or f'exit {p.returncode}'}")
    return binary


def time_cases(tools: dict[str, Tool], binary: str, script: str, work: str) -> dict[str, Callable[[], float] | str]:
    """Row 6: "CLOCK:COLUMN" cases (seconds per clock_gettime, from clock_loop) and
    "workload:COLUMN" (wall seconds of the time-hungry script), for each of TIME_COLUMNS."""
    vb = tools["viewbox"]
    prefixes: dict[str, list[str] | str] = {"native": []}
    prefixes["faketime"] = ["faketime", "-f", TIME_OFFSET] if shutil.which("faketime") else "not installed"
    prefixes["viewbox"] = (vb.missing or
                           vb.prefix([work], {k: WORKLOAD_ENV[k] for k in INNER_ENV_KEYS})[:-1]
                           + [f"--time-offset={TIME_OFFSET}", "--"])
    envs = {"native": tools["native"].env, "faketime": tools["native"].env, "viewbox": vb.env}
    cases: dict[str, Callable[[], float] | str] = {}
    for column in TIME_COLUMNS:
        prefix = prefixes[column]
        for what in ("realtime", "monotonic", "futex", "workload"):
            if isinstance(prefix, str):
                cases[f"{what}:{column}"] = prefix
            elif what == "workload":
                cases[f"{what}:{column}"] = functools.partial(timed_run, prefix + [PYTHON, script], envs[column],
                                                              work, 300)
            else:
                argv = prefix + [binary, what, str(TIME_CALLS[column])]
                cases[f"{what}:{column}"] = functools.partial(per_call_run, argv, envs[column], work, 300)
    return cases


def time_report(results: dict[str, Series]) -> tuple[str, dict[str, object]]:
    """Row 6 as its own small table (its columns are not the other rows' tools)."""
    def cell(name: str, fmt: Callable[[float], str]) -> str:
        s = results.get(name)
        if s is None:
            return ""
        return fmt(s.median) if s.ok else cell_error(s)

    lines = [f"{'6. the time view':<58}" + "".join(f"{c:>14}" for c in TIME_COLUMNS)]
    derived: dict[str, object] = {}
    for clock in ("realtime", "monotonic"):
        lines.append(f"{f'   clock_gettime({clock.upper()}), median ns per call':<58}"
                     + "".join(f"{cell(f'{clock}:{c}', lambda v: f'{v * 1000:.0f}'):>14}" for c in TIME_COLUMNS))
        derived[f"{clock}_ns"] = {c: round(results[f"{clock}:{c}"].median * 1000, 1)
                                  for c in TIME_COLUMNS if results[f"{clock}:{c}"].ok}
    lines.append(f"{'   futex wait with a timeout (EAGAIN at once), ns per call':<58}"
                 + "".join(f"{cell(f'futex:{c}', lambda v: f'{v * 1000:.0f}'):>14}" for c in TIME_COLUMNS))
    derived["futex_ns"] = {c: round(results[f"futex:{c}"].median * 1000, 1)
                           for c in TIME_COLUMNS if results[f"futex:{c}"].ok}
    lines.append(f"{'   time-hungry workload (50,000 timestamped lines), ms':<58}"
                 + "".join(f"{cell(f'workload:{c}', lambda v: f'{v:.0f}'):>14}" for c in TIME_COLUMNS))
    native = results.get("workload:native")
    ratios: dict[str, float] = {}
    for c in TIME_COLUMNS:
        s = results.get(f"workload:{c}")
        if native and native.ok and s and s.ok:
            ratios[c] = round(s.median / native.median, 2)
    lines.append(f"{'   ratio to native':<58}" + "".join(f"{(f'{ratios[c]:.2f}' if c in ratios else ''):>14}"
                                                         for c in TIME_COLUMNS))
    derived["workload_ratio"] = ratios
    errors = sorted({f"  {name}: {s.error}" for name, s in results.items() if s.error})
    if errors:
        lines += ["", "errors (row 6):", *errors]
    return "\n".join(lines), derived


def build_syscall_loop(work: str) -> str:
    """Compiles syscall_loop.c into `work` (visible inside every tool);
    returns the binary's path. Raises RunFailed if it cannot."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "syscall_loop.c")
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RunFailed("no gcc (or cc) on PATH to build syscall_loop.c")
    binary = os.path.join(work, "syscall_loop")
    p = subprocess.run([cc, "-O2", "-Wall", "-pthread", "-o", binary, source], capture_output=True, text=True)
    if p.returncode:
        raise RunFailed(f"building syscall_loop.c: {_first_line(p.stderr) or f'exit {p.returncode}'}")
    return binary


def per_call_run(argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> float:
    """Runs syscall_loop under a tool; returns the µs per call it printed."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"timed out after {timeout:g} s") from None
    except OSError as e:
        raise RunFailed(f"{argv[0]}: {e.strerror}") from None
    err = _first_line(p.stderr.decode(errors="replace"))
    if p.returncode != 0:
        raise RunFailed(f"exit {p.returncode}" + (f": {err}" if err else ""))
    try:
        return float(p.stdout.decode().split()[-1]) / 1000
    except (ValueError, IndexError):
        raise RunFailed(f"no ns-per-call figure in its output {p.stdout[:80]!r}" + (f" ({err})" if err else "")) from None


def syscall_cases(tools: dict[str, Tool], binary: str, target: str, calls: int, cwd: str,
                  binds: Sequence[str]) -> dict[str, Callable[[], float] | str]:
    """One case per (mode, tool), named "MODE:TOOL": a batch of `calls` calls
    (proot: calls / PROOT_CALLS_DIVISOR) in one run of syscall_loop; and
    "FLOOR:native" for each of FLOOR_MODES, natively."""
    cases: dict[str, Callable[[], float] | str] = {
        f"{floor}:native": functools.partial(per_call_run, [binary, floor, str(calls), target],
                                             tools["native"].env, cwd, 300)
        for floor in FLOOR_MODES}
    for mode in SYSCALL_MODES:
        for name, tool in tools.items():
            if tool.missing:
                cases[f"{mode}:{name}"] = tool.missing
                continue
            n = max(1, calls // PROOT_CALLS_DIVISOR) if name == "proot" else calls
            argv = tool.argv([binary, mode, str(n), target], binds)
            cases[f"{mode}:{name}"] = functools.partial(per_call_run, argv, tool.env, cwd, 300)
    return cases


# --- workloads -----------------------------------------------------------

def make_file_tree(root: str) -> int:
    count = 0
    for d in range(FILE_DIRS):
        sub = os.path.join(root, f"d{d:03d}")
        os.mkdir(sub)
        for f in range(FILES_PER_DIR):
            with open(os.path.join(sub, f"f{f:03d}.txt"), "w") as fh:
                fh.write(f"file {d}/{f}\n" * (1 + (d * FILES_PER_DIR + f) % 40))
            count += 1
    return count


# --- report --------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
            "cpu": cpu, "host_python": f"{platform.python_version()} ({sys.executable})",
            "workload_python": _version([PYTHON, "--version"]) + f" ({PYTHON})"}


def fmt_ms(s: Series) -> str:
    return f"{s.median:.1f}" if s.ok else ""


def cell_error(s: Series) -> str:
    if s.error == "not installed":
        return "not installed"
    return "error" if s.error else "-"


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def report(tools: dict[str, Tool], results: dict[str, dict[str, Series]], runs_info: dict[str, int],
           calls: int = 0) -> tuple[str, dict[str, Any]]:
    width = 11
    LABEL = 52
    lines: list[str] = []
    errors: dict[tuple[str, str], list[str]] = {}  # (column, message) -> the sections it failed
    derived: dict[str, Any] = {}

    def row(label: str, cells: list[str], target: str = "") -> None:
        lines.append((f"{label:<{LABEL}}" + "".join(f"{c:>{width}}" for c in cells) + f"  {target}").rstrip())

    def values(section: str, getter: Callable[[Series], str]) -> list[str]:
        out = []
        for name in TOOLS:
            s = results[section].get(name)
            if s is None:
                out.append("n/a")
            elif s.ok:
                out.append(getter(s))
            else:
                out.append(cell_error(s))
                if s.error and s.error != "not installed":
                    where = errors.setdefault((name, s.error), [])
                    if section not in where:
                        where.append(section)
        return out

    def verdict(value: float | None, target: float, unit: str, who: str = "target") -> str:
        stated = f"{who} <= {target:g} {unit}" if unit else f"{who} <= {target:.2f}"
        if value is None:
            return f"{stated}: no figure"
        return f"{stated}: {'ok' if value <= target else 'MISSED'}"

    def get(section: str, name: str) -> Series | None:
        s = results.get(section, {}).get(name)
        return s if s is not None and s.ok else None

    def cells_of(section: str, d: dict[str, float | None], fmt: str, skip: Sequence[str] = ()) -> list[str]:
        out = []
        for name in TOOLS:
            s = results[section].get(name)
            if name in skip:
                out.append("")
            elif d.get(name) is not None:
                out.append(format(d[name], fmt))
            else:
                out.append(cell_error(s) if s else "n/a")
        return out

    row("", list(TOOLS))
    lines.append("-" * (LABEL + width * len(TOOLS) + 40))

    if "true" in results:
        vb = get("true", "viewbox")
        row(f"1. run -- /bin/true, median ms (n={runs_info['true']})", values("true", fmt_ms),
            verdict(vb.median if vb else None, TARGETS["true"], "ms"))
        row("   p90 ms", values("true", lambda s: f"{s.p90:.1f}"))
        floor = results["true"].get("interpreter")
        if floor is not None:
            cell = f"{floor.median:.1f}" if floor.ok else "error"
            if floor.error:
                errors.setdefault(("interpreter", floor.error), []).append("true")
            row("   of which: its Python's `-c pass`, median ms", ["", cell, cell, "", ""])

    if "api" in results:
        vb = get("api", "viewbox")
        row(f"2. API box.run([/bin/true]), median ms (n={runs_info['api']})",
            values("api", fmt_ms), verdict(vb.median if vb else None, TARGETS["api"], "ms"))
        row("   p90 ms", values("api", lambda s: f"{s.p90:.1f}"))

    for section, title in (("python", "3. import-heavy python3"),
                           ("files", f"4. find|xargs cat {FILE_DIRS * FILES_PER_DIR:,} files")):
        if section not in results:
            continue
        row(f"{title}, median ms (n={runs_info[section]})", values(section, fmt_ms))
        native = get(section, "native")
        native_true = get("true", "native")
        ratios: dict[str, float | None] = {}
        net: dict[str, float | None] = {}
        for name in TOOLS:
            s, t = get(section, name), get("true", name)
            ratios[name] = ratio(s.median, native.median) if s and native else None
            net[name] = (ratio(s.median - t.median, native.median - native_true.median)
                         if s and t and native and native_true else None)
        derived[section] = {"ratio": ratios, "ratio_startup_subtracted": net}
        target = ""
        if section in ("python", "files"):
            target = verdict(ratios["viewbox"], TARGETS[section], "")
        if section == "files":
            target += "; " + verdict(ratios["vb+rules"], TARGETS["files_rules"], "", who="vb+rules")
        row("   ratio to native (headline)", cells_of(section, ratios, ".2f"), target)
        row("   ratio, start-up of `true` subtracted", cells_of(section, net, ".2f"))

    sections = [f"syscall:{mode}" for mode in (*SYSCALL_MODES, *FLOOR_MODES) if f"syscall:{mode}" in results]
    if sections:
        n = max(runs_info[s] for s in sections)
        proot_calls = max(1, calls // PROOT_CALLS_DIVISOR)
        row(f"5. one call in a loop, median µs per call (n={n})",
            ["", "", "", "", ""], f"(batches of {calls:,} calls; proot {proot_calls:,})")
        for mode, (what, _) in SYSCALL_MODES.items():
            if f"syscall:{mode}" in results:
                row(f"   {what}", values(f"syscall:{mode}", lambda s: f"{s.median:.2f}"))
        row("   round trip = per call minus native, µs:", [""] * len(TOOLS))
        derived["syscall"] = {}
        for mode, (_, interposed) in SYSCALL_MODES.items():
            section = f"syscall:{mode}"
            if section not in results:
                continue
            native = get(section, "native")
            diff: dict[str, float | None] = {}
            for name in TOOLS:
                s = get(section, name)
                diff[name] = s.median - native.median if s and native else None
            derived["syscall"][mode] = {"per_call_us": {name: (round(s.median, 3) if (s := get(section, name)) else None)
                                                        for name in TOOLS},
                                        "round_trip_us": {k: None if v is None else round(v, 3) for k, v in diff.items()}}
            target = ""
            if mode == "fstat":
                target = verdict(diff["vb+rules"], TARGETS["roundtrip"], "µs", who="vb+rules")
            row(f"   {interposed}", cells_of(section, diff, ".2f", skip=("native",)), target)
        floors: dict[str, float] = {}
        for floor_mode, (counterpart, label) in FLOOR_MODES.items():
            if f"syscall:{floor_mode}" not in results:
                continue
            measured = results[f"syscall:{floor_mode}"]["native"]
            plain = get(f"syscall:{counterpart}", "native")
            value = measured.median - plain.median if measured.ok and plain else None
            if value is not None:
                floors[floor_mode] = value
            derived["syscall"][f"{floor_mode}_floor_us"] = None if value is None else round(value, 3)
            if measured.error:
                errors.setdefault(("native", measured.error), []).append(f"syscall:{floor_mode}")
            row(f"   {label}", ["", "", f"{value:.2f}" if value is not None else cell_error(measured), "", ""],
                "(the kernel's part of any round trip here)" if floor_mode == "notify" else "")
        files = get("files", "native")
        if files and "emulate-open" in floors and "emulate-fstat" in floors:
            # every file of row 4 costs cat one open and one fstat, both path calls to decide
            per_file_us = files.median * 1000 / (FILE_DIRS * FILES_PER_DIR)
            bound = 1 + (floors["emulate-open"] + floors["emulate-fstat"]) / per_file_us
            derived["files"]["rules_floor_ratio"] = round(bound, 3)
            row("   so row 4 under any path interposer >=", ["", "", f"{bound:.2f}", "", ""],
                f"(native {per_file_us:.2f} µs a file + one least open and one least fstat; "
                f"target {TARGETS['files_rules']})")

    if errors:
        lines.append("")
        lines.append("errors:")
        lines.extend(f"  {name} in {', '.join(where)}: {message}" for (name, message), where in errors.items())
    return "\n".join(lines), derived


# --- the network rows (6: nginx through listen and publish; 7: one emulated connect) ----

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {state}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {state}/body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""
NET_COLUMNS = ("native", "listen", "publish")
#: requests/s ratio to native of nginx with [net].listen (DESIGN.md §6)
NGINX_TARGET = 0.95
#: nginx runs as this user everywhere (as root it would switch users, which the sandbox forbids)
NGINX_USER = 65534


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _http_ready(port: int, timeout: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
                r.read()
                return True
        except OSError:
            time.sleep(0.05)
    return False


def nginx_cases(tools: dict[str, Tool], work: str, seconds: int) -> dict[str, Callable[[], float] | str]:
    """Each case: start nginx (natively, or in viewbox with its socket passed in by --listen, or
    behind --publish), wait until it serves, run wrk for `seconds`, stop it; requests/s."""
    nginx, wrk = shutil.which("nginx", path="/usr/sbin:/usr/bin"), shutil.which("wrk")
    if not nginx or not wrk:
        missing = "nginx (nginx-light)" if not nginx else "wrk"
        return {name: f"{missing} not installed" for name in NET_COLUMNS}
    root = os.path.join(work, "www")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "index.html"), "wb") as f:
        f.write(os.urandom(3072).hex().encode()[:4096])  # a 4 KiB static file
    os.chmod(work, 0o755)
    for path in (root, os.path.join(root, "index.html")):
        os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
    launcher = tools["viewbox"].prefix([work], {})[:-1]  # "... run --ro WORK", before "--"
    as_nobody = ["setpriv", f"--reuid={NGINX_USER}", f"--regid={NGINX_USER}", "--clear-groups"]

    def serve(name: str) -> tuple[list[str], int]:
        port = _free_port()
        state = tempfile.mkdtemp(prefix=f"nginx-{name}-", dir=work)
        os.chmod(state, 0o777)
        inside_port = 8080 if name == "publish" else port
        conf = os.path.join(state, "nginx.conf")
        with open(conf, "w") as f:
            # inside viewbox /tmp is its own tmpfs: the state goes there
            f.write(NGINX_CONF.format(state=state if name == "native" else "/tmp", port=inside_port, root=root))
        os.chmod(conf, 0o644)
        command = [nginx, "-e", "stderr", "-c", conf]
        ids = ["--uid", str(NGINX_USER), "--gid", str(NGINX_USER)]
        if name == "native":
            return as_nobody + command, port
        if name == "listen":  # nginx takes inherited sockets from $NGINX ("3;"), matched by address
            return launcher + ids + ["--listen", f"tcp:127.0.0.1:{port}", "--env", "NGINX=3;", "--"] + command, port
        return launcher + ids + ["--publish", f"127.0.0.1:{port}:8080", "--"] + command, port

    def case(name: str) -> Callable[[], float]:
        def run() -> float:
            argv, port = serve(name)
            server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, env=tools["viewbox"].env, cwd=work)
            try:
                if not _http_ready(port, 20):
                    server.kill()
                    _, err = server.communicate(timeout=20)
                    raise RunFailed(f"nginx did not serve: {_first_line(err.decode(errors='replace'))}")
                p = subprocess.run([wrk, "-t2", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/index.html"],
                                   capture_output=True, text=True, timeout=seconds + 30)
                m = re.search(r"Requests/sec:\s*([\d.]+)", p.stdout)
                if not m or "Non-2xx" in p.stdout or "Socket errors" in p.stdout:
                    raise RunFailed(f"wrk: {_first_line(p.stdout + p.stderr)}")
                return float(m.group(1))
            finally:
                if server.poll() is None:
                    server.terminate()
                    try:
                        server.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        server.kill()
                        server.wait()
        return run

    return {name: case(name) for name in NET_COLUMNS}


CONNECT_LOOP = """
import socket, sys, time
port, calls = int(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
for _ in range(calls):
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    s.close()
print((time.perf_counter() - start) / calls * 1e6)
"""


def connect_cases(tools: dict[str, Tool], work: str, calls: int) -> tuple[dict[str, Callable[[], float] | str], Any]:
    """µs per connect()+close() to a server on the host's loopback: natively, and in viewbox with
    --allow-net naming it (each connect emulated by the supervisor)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = server.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                server.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    command = [PYTHON, "-c", CONNECT_LOOP, str(port), str(calls)]

    def measure(argv: list[str], env: dict[str, str]) -> float:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work, timeout=300)
        if p.returncode != 0:
            raise RunFailed(f"exit {p.returncode}: {_first_line(p.stderr)}")
        return float(p.stdout.strip()) / 1e6  # interleave scales seconds back to µs

    allowed = tools["viewbox"].prefix([], {})[:-1] + ["--allow-net", f"127.0.0.1:{port}", "--"]
    cases: dict[str, Callable[[], float] | str] = {
        "native": lambda: measure(command, WORKLOAD_ENV),
        "allowed": lambda: measure(allowed + command, tools["viewbox"].env),
    }
    return cases, server


def net_report(results: dict[str, dict[str, Series]]) -> tuple[list[str], dict[str, Any]]:
    lines: list[str] = []
    derived: dict[str, Any] = {}
    if "nginx" in results:
        series = results["nginx"]
        native = series["native"].median if series["native"].ok else None
        n = max(len(s.samples) for s in series.values())
        lines.append(f"7. nginx static file (4 KiB), wrk -t2 -c32, requests/s (n={n})")
        derived["nginx"] = {}
        for name in NET_COLUMNS:
            s = series[name]
            if not s.ok:
                lines.append(f"   {name:<10}{'error':>12}  {s.error}")
                continue
            r = s.median / native if native else None
            derived["nginx"][name] = {"median_rps": round(s.median, 1), "ratio": None if r is None else round(r, 3)}
            target = ""
            if name == "listen" and r is not None:
                target = f"  target >= {NGINX_TARGET}: {'ok' if r >= NGINX_TARGET else 'MISSED'}"
            shown = f"ratio {r:.3f}" if r is not None and name != "native" else ""
            lines.append(f"   {name:<10}{s.median:>12.0f}  {shown}{target}".rstrip())
    if "connect" in results:
        series = results["connect"]
        n = max(len(s.samples) for s in series.values())
        lines.append(f"8. connect()+close() to the host's loopback, median µs per call (n={n})")
        native, allowed = series["native"], series["allowed"]
        for name, s in (("native", native), ("allowed", allowed)):
            lines.append(f"   {name:<10}{s.median:>12.1f}" if s.ok else f"   {name:<10}{'error':>12}  {s.error}")
        if native.ok and allowed.ok:
            cost = allowed.median - native.median
            derived["connect"] = {"native_us": round(native.median, 2), "allowed_us": round(allowed.median, 2),
                                  "emulation_cost_us": round(cost, 2)}
            lines.append(f"   cost of one emulated connect (allowed - native): {cost:.1f} µs")
    return lines, derived


# --- main ----------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See benchmarks/README.md for what each row means.")
    parser.add_argument("--quick", action="store_true", help="fewer runs (about a minute on 2 cores)")
    parser.add_argument("--json", metavar="FILE", help="also write every sample and figure to FILE")
    parser.add_argument("--dir", metavar="DIR", default="/var/tmp",
                        help="where to make the temporary work tree (default /var/tmp; not /tmp, "
                             "which the default policy replaces with a tmpfs)")
    parser.add_argument("--checkout", action="store_true",
                        help="time `python -m viewbox` on this checkout even if a `viewbox` "
                             "console script is installed (e.g. an older `pip install .`)")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--viewbox-flag", action="append", default=[], metavar="FLAG",
                        help="add FLAG to both viewbox columns' `viewbox run` (repeatable), e.g. "
                             "--viewbox-flag=--time-offset=-1d for rows 3-4 under a time view")
    args = parser.parse_args(argv)
    only = set(args.only or SECTIONS)

    # per section: (runs, time budget in seconds after which to stop, fewest runs even so);
    # proot makes the file workload ~20x slower, so that section takes most of the time
    plan = ({"true": (10, 5, 5), "api": (30, 3, 10), "python": (5, 5, 3), "files": (2, 10, 2),
             "syscall": (5, 10, 3), "time": (3, 10, 2), "nginx": (2, 30, 1), "connect": (3, 10, 2)} if args.quick else
            {"true": (30, 20, 10), "api": (100, 10, 30), "python": (20, 40, 5), "files": (12, 80, 3),
             "syscall": (20, 150, 5), "time": (10, 60, 3), "nginx": (5, 120, 3), "connect": (7, 40, 3)})
    calls = 5_000 if args.quick else 20_000  # per batch of section 5 (proot: a tenth)

    if os.path.isfile(os.path.join(REPO, "viewbox", "__init__.py")):
        sys.path.insert(0, REPO)  # the API figures are of this checkout
    tools = make_tools(args.checkout, args.viewbox_flag)
    info = machine()
    try:
        import viewbox
        info["viewbox"] = f"{viewbox.__version__} ({os.path.dirname(viewbox.__file__)})"
    except Exception as e:  # noqa: BLE001
        info["viewbox"] = f"import failed: {type(e).__name__}: {e}"

    print("machine:  " + f"nproc {info['nproc']}, {info['kernel']}" + (f", {info['cpu']}" if info["cpu"] else ""))
    print(f"python:   host {info['host_python']}; workloads {info['workload_python']}")
    print(f"viewbox:  API imports {info['viewbox']}")
    print(f"          CLI = {tools['viewbox'].version}")
    vb = tools["viewbox"]
    if vb.interpreter:
        where = subprocess.run([vb.interpreter, "-c", "import os, viewbox; print(os.path.dirname(viewbox.__file__))"],
                               capture_output=True, text=True, env=vb.env, cwd="/")
        info["viewbox_cli_package"] = where.stdout.strip() or _first_line(where.stderr)
        print(f"          the CLI imports {info['viewbox_cli_package']} (interpreter {vb.interpreter})")
        checkout = os.path.join(REPO, "viewbox")
        if where.returncode == 0 and os.path.realpath(info["viewbox_cli_package"]) != os.path.realpath(checkout):
            print(f"          note: not this checkout ({checkout}); `pip install .` to refresh it, or --checkout")
    if args.viewbox_flag:
        print(f"          with the flags {' '.join(args.viewbox_flag)} in both viewbox columns (rows 1, 3, 4)")
    print(f"vb+rules: {tools['vb+rules'].version}")
    for name in ("bwrap", "proot"):
        t = tools[name]
        print(f"{name + ':':<10}{t.missing or t.version}")
    print(file=sys.stderr)

    started = time.monotonic()
    results: dict[str, dict[str, Series]] = {}
    work = tempfile.mkdtemp(prefix="viewbox-bench-", dir=args.dir)
    try:
        if "true" in only:
            cases = tool_cases(tools, ["/bin/true"], work, 30)
            if tools["viewbox"].interpreter:  # the floor under viewbox's start-up: its Python doing nothing
                floor = [tools["viewbox"].interpreter, "-c", "pass"]
                cases["interpreter"] = lambda: timed_run(floor, tools["viewbox"].env, work, 30)
            results["true"] = interleave(cases, *plan["true"], label="1/8 /bin/true")
        if "api" in only:
            results["api"] = interleave(api_cases(), *plan["api"], label="2/8 API spawn")

        inner_env = {k: WORKLOAD_ENV[k] for k in INNER_ENV_KEYS}
        if "python" in only:
            script = os.path.join(work, "imports.py")
            with open(script, "w") as f:
                f.write(IMPORT_HEAVY)
            warm = subprocess.run([PYTHON, script], capture_output=True, text=True, cwd=work)  # fills the pyc cache
            if warm.returncode:
                print(f"warning: native warm-up of {script} failed: {_first_line(warm.stderr)}", file=sys.stderr)
            results["python"] = interleave(tool_cases(tools, [PYTHON, script], work, 120, [work], inner_env),
                                           *plan["python"], label="3/8 import-heavy python")

        if "files" in only:
            tree = os.path.join(work, "tree")
            print(f"  creating {FILE_DIRS * FILES_PER_DIR:,} files in {tree}", file=sys.stderr)
            try:
                os.mkdir(tree)
                make_file_tree(tree)
            except OSError as e:
                results["files"] = {name: Series(error=tools[name].missing or f"creating the tree: {e}")
                                    for name in TOOLS}
            else:
                command = ["/bin/sh", "-c", f"find {tree} -type f | xargs cat > /dev/null"]
                # No warm-up round: writing the tree has just filled the page cache,
                # and a round under proot costs several seconds (so --quick takes one).
                results["files"] = interleave(tool_cases(tools, command, work, 300, [work], inner_env),
                                              *plan["files"], label="4/8 find | xargs cat", warm_up=False,
                                              caps={"proot": 1} if args.quick else None)

        if "nginx" in only:
            results["nginx"] = interleave(nginx_cases(tools, work, 3 if args.quick else 5),
                                          *plan["nginx"], label="7/8 nginx: listen, publish", warm_up=False,
                                          unit="req/s", scale=1)
        if "connect" in only:
            cases, server = connect_cases(tools, work, 500 if args.quick else 2000)
            try:
                results["connect"] = interleave(cases, *plan["connect"], label="8/8 emulated connect",
                                                unit="us", scale=1e6)
            finally:
                server.close()

        if "syscall" in only:
            target = os.path.join(work, "target.txt")  # what stat and open name; fstat's fd is open on it
            with open(target, "w") as f:
                f.write("syscall_loop target\n")
            try:
                binary = build_syscall_loop(work)
            except RunFailed as e:
                for mode in SYSCALL_MODES:
                    results[f"syscall:{mode}"] = {name: Series(error=tools[name].missing or str(e), unit="us")
                                                  for name in TOOLS}
            else:
                series = interleave(syscall_cases(tools, binary, target, calls, work, [work]),
                                    *plan["syscall"], label="5/8 one call in a loop", unit="us", scale=1)
                for mode in SYSCALL_MODES:
                    results[f"syscall:{mode}"] = {name: series[f"{mode}:{name}"] for name in TOOLS}
                for floor_mode in FLOOR_MODES:
                    results[f"syscall:{floor_mode}"] = {"native": series[f"{floor_mode}:native"]}
        if "time" in only:
            try:
                clock_loop = build_clock_loop(work)
            except RunFailed as e:
                time_results = {f"{w}:{c}": Series(error=str(e), unit="us")
                                for w in ("realtime", "monotonic", "futex", "workload") for c in TIME_COLUMNS}
            else:
                hungry = os.path.join(work, "time_hungry.py")
                with open(hungry, "w") as f:
                    f.write(TIME_HUNGRY)
                time_results = interleave(time_cases(tools, clock_loop, hungry, work), *plan["time"],
                                          label="6/8 the time view", unit="us", scale=1)
                for name, series_ in time_results.items():  # the workload's samples: seconds -> ms
                    if name.startswith("workload:"):
                        series_.samples = [v * 1000 for v in series_.samples]
                        series_.unit = "ms"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started

    net_results = {key: results.pop(key) for key in ("nginx", "connect") if key in results}
    runs_info = {section: max((len(s.samples) for s in series.values()), default=0)
                 for section, series in results.items()}
    table, derived = report(tools, results, runs_info, calls)
    net_lines, net_derived = net_report(net_results)
    derived.update(net_derived)
    results.update(net_results)
    # rows 1-5 ("syscall" is stored per call: "syscall:fstat", ...)
    if any(key.partition(":")[0] in SECTIONS for key in results if key not in net_results and key != "time"):
        print()
        print(table)
    if "time" in only:
        time_table, derived["time"] = time_report(time_results)
        results["time"] = time_results  # for --json (after report(): not one of its sections)
        print()
        print(time_table)
    if net_lines:
        print()
        print("\n".join(net_lines))
    print(f"\n(medians over interleaved runs; rows 1-4 wall-clock of the whole command, row 5 timed inside "
          f"the loop; total {elapsed:.0f} s)")

    if args.json:
        doc = {
            "machine": info,
            "tools": {name: {"version": t.version, "missing": t.missing} for name, t in tools.items()},
            "quick": args.quick,
            "syscall_calls_per_batch": {"proot": max(1, calls // PROOT_CALLS_DIVISOR), "others": calls},
            "targets": TARGETS,
            "results": {section: {name: s.to_json() for name, s in series.items()}
                        for section, series in results.items()},
            "derived": derived,
            "seconds": round(elapsed, 1),
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
