#!/usr/bin/env python3
"""viewbox benchmarks: viewbox side by side with native, bubblewrap and PRoot.

    python benchmarks/run.py [--quick] [--json FILE] [--dir DIR]

Measures, in one run and with the tools interleaved round-robin (so machine
noise falls on every column alike), the targets of DESIGN.md section 6:

  1. start-up: wall time of `viewbox run -- /bin/true` (and the same under
     native, bwrap, proot)
  2. API spawn: `box.run(["/bin/true"])` from a warm Python process
  3. import-heavy Python script: /usr/bin/python3 importing ~100 stdlib modules
  4. file-heavy shell workload: `find DIR -type f | xargs cat` over 20,000 files

and prints a table of medians, with ratios to native. Standard library only.
See benchmarks/README.md for how to read the table.
"""
from __future__ import annotations

import argparse
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
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
TOOLS = ("native", "viewbox", "bwrap", "proot")
TARGETS = {"true": 40.0, "api": 5.0, "python": 1.10, "files": 1.10}

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


def make_tools() -> dict[str, Tool]:
    tools = {"native": Tool("native", version=platform.release())}

    launcher, launcher_env, described = viewbox_launcher()

    def viewbox_prefix(binds: list[str], inner_env: dict[str, str]) -> list[str]:
        flags = [f for path in binds for f in ("--ro", path)]
        flags += [f for key, value in inner_env.items() for f in ("--env", f"{key}={value}")]
        return launcher + ["run"] + flags + ["--"]

    # viewbox's own Python start must not run without its pyc cache, so the
    # workload's variables reach the command through --env, not the launcher.
    env = {k: v for k, v in WORKLOAD_ENV.items() if k not in INNER_ENV_KEYS} | launcher_env
    interpreter = sys.executable if launcher[0] == sys.executable else _shebang(launcher[0])
    tools["viewbox"] = Tool("viewbox", viewbox_prefix, env, version=described, interpreter=interpreter)

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
    samples: list[float] = field(default_factory=list)  # milliseconds
    error: str = ""

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
            out.update(median_ms=round(self.median, 3), p90_ms=round(self.p90, 3),
                       samples_ms=[round(s, 3) for s in self.samples])
        return out


def interleave(cases: dict[str, Callable[[], float] | str], runs: int, budget: float,
               min_runs: int, label: str, warm_up: bool = True,
               caps: dict[str, int] | None = None) -> dict[str, Series]:
    """Times every case `runs` times, round-robin (the order rotating each
    round), after one untimed warm-up each unless `warm_up` is false. A case
    given as a string is an error to report, not to run. Stops early once
    `budget` seconds are spent and every case has `min_runs` samples.
    `caps` limits the rounds of named cases (a slow peer in a quick run).
    A case that fails keeps its error and drops out; the others go on."""
    caps = caps or {}
    series = {name: Series(error=case if isinstance(case, str) else "") for name, case in cases.items()}
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
                seconds = attempt(name)
                if seconds is not None:
                    series[name].samples.append(seconds * 1000)
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
        cases[name] = lambda argv=argv, env=tool.env: timed_run(argv, env, cwd, timeout)
    return cases


def api_cases() -> dict[str, Callable[[], float] | str]:
    """box.run(["/bin/true"]) from this warm process, against a plain
    subprocess.run of the same command with the same output capture."""
    def native() -> float:
        start = time.perf_counter()
        p = subprocess.run(["/bin/true"], capture_output=True)
        elapsed = time.perf_counter() - start
        if p.returncode:
            raise RunFailed(f"exit {p.returncode}")
        return elapsed

    cases: dict[str, Callable[[], float] | str] = {"native": native}
    try:
        import viewbox
        box = viewbox.Sandbox()
    except Exception as e:  # noqa: BLE001
        cases["viewbox"] = f"{type(e).__name__}: {e}"
        return cases

    def sandboxed() -> float:
        start = time.perf_counter()
        result = box.run(["/bin/true"])
        elapsed = time.perf_counter() - start
        if result.returncode:
            raise RunFailed(f"exit {result.returncode}: {_first_line((result.stderr or b'').decode(errors='replace'))}")
        return elapsed

    cases["viewbox"] = sandboxed
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


def report(tools: dict[str, Tool], results: dict[str, dict[str, Series]], runs_info: dict[str, int]) -> tuple[str, dict]:
    width = 15
    LABEL = 50
    lines: list[str] = []
    errors: list[str] = []
    derived: dict[str, dict[str, float | None]] = {}

    def row(label: str, cells: list[str], target: str = "") -> None:
        lines.append(f"{label:<{LABEL}}" + "".join(f"{c:>{width}}" for c in cells) + f"  {target}")

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
                if s.error and s.error != "not installed" and f"{section}/{name}: {s.error}" not in errors:
                    errors.append(f"{section}/{name}: {s.error}")
        return out

    def verdict(value: float | None, target: float, unit: str) -> str:
        stated = f"target <= {target:g} ms" if unit else f"target <= {target:.2f}"
        if value is None:
            return f"{stated}: no figure"
        return f"{stated}: {'ok' if value <= target else 'MISSED'}"

    def get(section: str, name: str) -> Series | None:
        s = results.get(section, {}).get(name)
        return s if s is not None and s.ok else None

    row("", list(TOOLS))
    lines.append("-" * (LABEL + width * len(TOOLS) + 24))

    vb = get("true", "viewbox")
    row(f"1. run -- /bin/true, median ms (n={runs_info['true']})", values("true", fmt_ms),
        verdict(vb.median if vb else None, TARGETS["true"], "ms"))
    row("   p90 ms", values("true", lambda s: f"{s.p90:.1f}"))
    floor = results["true"].get("interpreter")
    if floor is not None:
        cell = f"{floor.median:.1f}" if floor.ok else "error"
        if floor.error:
            errors.append(f"true/interpreter: {floor.error}")
        row("   of which: its Python's `-c pass`, median ms", ["", cell, "", ""])

    vb = get("api", "viewbox")
    row(f"2. API box.run([/bin/true]), median ms (n={runs_info['api']})",
        values("api", fmt_ms), verdict(vb.median if vb else None, TARGETS["api"], "ms"))
    row("   p90 ms", values("api", lambda s: f"{s.p90:.1f}"))

    for section, title in (("python", "3. import-heavy python3"),
                           ("files", f"4. find|xargs cat {FILE_DIRS * FILES_PER_DIR:,} files")):
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

        def show(d: dict[str, float | None]) -> list[str]:
            out = []
            for name in TOOLS:
                s = results[section].get(name)
                out.append(f"{d[name]:.2f}" if d[name] is not None else cell_error(s) if s else "n/a")
            return out

        row("   ratio to native (headline)", show(ratios), verdict(ratios["viewbox"], TARGETS[section], ""))
        row("   ratio, start-up of `true` subtracted", show(net))

    if errors:
        lines.append("")
        lines.append("errors:")
        lines.extend(f"  {e}" for e in errors)
    return "\n".join(lines), derived


# --- main ----------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See benchmarks/README.md for what each row means.")
    parser.add_argument("--quick", action="store_true", help="fewer runs (under ~40 s on 2 cores)")
    parser.add_argument("--json", metavar="FILE", help="also write every sample and figure to FILE")
    parser.add_argument("--dir", metavar="DIR", default="/var/tmp",
                        help="where to make the temporary work tree (default /var/tmp; not /tmp, "
                             "which the default policy replaces with a tmpfs)")
    args = parser.parse_args(argv)

    # per section: (runs, time budget in seconds after which to stop, fewest runs even so);
    # proot makes the file workload ~20x slower, so that section takes most of the time
    plan = ({"true": (10, 5, 5), "api": (30, 3, 10), "python": (5, 5, 3), "files": (2, 10, 2)} if args.quick else
            {"true": (30, 20, 10), "api": (100, 10, 30), "python": (20, 40, 5), "files": (12, 80, 3)})

    if os.path.isfile(os.path.join(REPO, "viewbox", "__init__.py")):
        sys.path.insert(0, REPO)  # the API figures are of this checkout
    tools = make_tools()
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
            print(f"          note: not this checkout ({checkout}); `pip install .` to refresh it")
    for name in ("bwrap", "proot"):
        t = tools[name]
        print(f"{name + ':':<10}{t.missing or t.version}")
    print(file=sys.stderr)

    started = time.monotonic()
    results: dict[str, dict[str, Series]] = {}
    work = tempfile.mkdtemp(prefix="viewbox-bench-", dir=args.dir)
    try:
        cases = tool_cases(tools, ["/bin/true"], work, 30)
        if tools["viewbox"].interpreter:  # the floor under viewbox's start-up: its Python doing nothing
            floor = [tools["viewbox"].interpreter, "-c", "pass"]
            cases["interpreter"] = lambda: timed_run(floor, tools["viewbox"].env, work, 30)
        results["true"] = interleave(cases, *plan["true"], label="1/4 /bin/true")
        results["api"] = interleave(api_cases(), *plan["api"], label="2/4 API spawn")

        script = os.path.join(work, "imports.py")
        with open(script, "w") as f:
            f.write(IMPORT_HEAVY)
        warm = subprocess.run([PYTHON, script], capture_output=True, text=True, cwd=work)  # fills the pyc cache
        if warm.returncode:
            print(f"warning: native warm-up of {script} failed: {_first_line(warm.stderr)}", file=sys.stderr)
        inner_env = {k: WORKLOAD_ENV[k] for k in INNER_ENV_KEYS}
        results["python"] = interleave(tool_cases(tools, [PYTHON, script], work, 120, [work], inner_env),
                                       *plan["python"], label="3/4 import-heavy python")

        tree = os.path.join(work, "tree")
        print(f"  creating {FILE_DIRS * FILES_PER_DIR:,} files in {tree}", file=sys.stderr)
        try:
            os.mkdir(tree)
            make_file_tree(tree)
        except OSError as e:
            results["files"] = {name: Series(error=tools[name].missing or f"creating the tree: {e}") for name in TOOLS}
        else:
            command = ["/bin/sh", "-c", f"find {tree} -type f | xargs cat > /dev/null"]
            # No warm-up round: writing the tree has just filled the page cache,
            # and a round under proot costs several seconds (so --quick takes one).
            results["files"] = interleave(tool_cases(tools, command, work, 300, [work], inner_env),
                                          *plan["files"], label="4/4 find | xargs cat", warm_up=False,
                                          caps={"proot": 1} if args.quick else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started

    runs_info = {section: max((len(s.samples) for s in series.values()), default=0)
                 for section, series in results.items()}
    table, derived = report(tools, results, runs_info)
    print()
    print(table)
    print(f"\n(all figures wall-clock; medians over interleaved runs; total {elapsed:.0f} s)")

    if args.json:
        doc = {
            "machine": info,
            "tools": {name: {"version": t.version, "missing": t.missing} for name, t in tools.items()},
            "quick": args.quick,
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
