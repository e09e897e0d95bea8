#!/usr/bin/env python3
"""viewbox benchmark: memory per extra sandbox, against bubblewrap.

    python benchmarks/memory.py [--sandboxes N] [--json FILE]

DESIGN.md section 6 sets "supervisor memory per extra sandbox <= 1 MiB". One
Python process (this one) keeps N sandboxes alive at once through the API, each
running `sleep`, and the script reads, from /proc/PID/smaps_rollup:

- **supervisor**: how much this process (the API, the supervisor thread, its
  per-sandbox state) grew per extra sandbox, in resident memory (Rss),
  measured after two warm-up sandboxes, so one-time costs (the supervisor
  thread's stack, imports) are not counted;
- **whole machine**: how much the machine's used memory (MemTotal -
  MemAvailable of /proc/meminfo) grew per extra sandbox, less what the same
  number of plain `sleep` processes use: everything a sandbox costs, the
  kernel's part included (namespaces, mounts, page tables, the init and
  broker). The init and the broker are copies of this process (clone, then
  fork): they share its pages until one side writes to them, so their own
  figures (USS, PSS) say little; the machine's does. Run it on a quiet machine.

Twice: without per-path rules (nothing interposed) and with one rule
(`--deny '**/*.secret'`: the supervisor serves every path call of the sandbox,
and each sandbox has a broker). bubblewrap, where installed, is measured the
same way: the PSS of the `bwrap` processes that stay beside each command.
Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rollup(pid: int) -> dict[str, int]:
    """The /proc/PID/smaps_rollup fields, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def settle() -> None:
    time.sleep(0.3)  # let the new processes finish starting (page faults after exec)


def used_kib() -> int:
    with open("/proc/meminfo") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return fields["MemTotal"] - fields["MemAvailable"]


def machine_growth(start: Callable[[], Callable[[], None]], n: int) -> float:
    """KiB of used memory per instance while `n` started by `start` are alive
    (each call of `start` returns the function that ends it)."""
    settle()
    before = used_kib()
    stops = []
    try:
        for _ in range(n):
            stops.append(start())
        settle()
        after = used_kib()
    finally:
        for stop in stops:
            stop()
    return (after - before) / n


def popen_starter(argv: list[str]) -> Callable[[], Callable[[], None]]:
    def start() -> Callable[[], None]:
        p = subprocess.Popen(argv)

        def stop() -> None:
            p.kill()
            p.wait()
        return stop
    return start


def measure_viewbox(n: int, rules: bool) -> dict[str, float]:
    import viewbox

    box = viewbox.Sandbox(deny=["**/*.secret"] if rules else None)

    def start() -> Callable[[], None]:
        proc = box.spawn(["sleep", "120"])

        def stop() -> None:
            proc.kill()
            proc.wait()
        return stop

    warm = [start() for _ in range(2)]  # one-time costs: the supervisor thread, imports
    settle()
    before = rollup(os.getpid()).get("Rss", 0)
    try:
        stops = [start() for _ in range(n)]
        settle()
        supervisor = (rollup(os.getpid()).get("Rss", 0) - before) / n
        for stop in stops:
            stop()
    finally:
        for stop in warm:
            stop()
    return {"supervisor_kib": supervisor, "machine_kib": machine_growth(start, n)}


def measure_bwrap(n: int) -> dict[str, float] | str:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return "not installed"
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
            "--die-with-parent", "sleep", "120"]
    return {"machine_kib": machine_growth(popen_starter(argv), n)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See benchmarks/README.md for what each figure means.")
    parser.add_argument("--sandboxes", type=int, default=50, metavar="N",
                        help="sandboxes alive at once (default 50)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args(argv)
    if os.path.isfile(os.path.join(REPO, "viewbox", "__init__.py")):
        sys.path.insert(0, REPO)  # the figures are of this checkout
    n = args.sandboxes
    native = machine_growth(popen_starter(["sleep", "120"]), n)
    results: dict[str, dict[str, float] | str] = {
        "viewbox": measure_viewbox(n, rules=False),
        "vb+rules": measure_viewbox(n, rules=True),
        "bwrap": measure_bwrap(n),
    }
    print(f"memory per extra sandbox, {n} alive at once, KiB "
          f"(machine: less {native:.0f} KiB for a plain sleep)\n")
    print(f"{'':<44}{'viewbox':>10}{'vb+rules':>10}{'bwrap':>10}")

    def cell(tool: str, key: str, minus: float = 0.0) -> str:
        r = results[tool]
        if isinstance(r, str):
            return r
        return f"{r[key] - minus:.0f}" if key in r else "n/a"

    print(f"{'supervisor process (Rss growth)':<44}{cell('viewbox', 'supervisor_kib'):>10}"
          f"{cell('vb+rules', 'supervisor_kib'):>10}{'n/a':>10}")
    print(f"{'whole machine (used memory growth)':<44}{cell('viewbox', 'machine_kib', native):>10}"
          f"{cell('vb+rules', 'machine_kib', native):>10}{cell('bwrap', 'machine_kib', native):>10}")
    worst = max(r["supervisor_kib"] for r in results.values() if isinstance(r, dict) and "supervisor_kib" in r)
    print(f"\ntarget: supervisor memory per extra sandbox <= 1024 KiB: {'ok' if worst <= 1024 else 'MISSED'} "
          f"({worst:.0f} KiB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sandboxes": n, "native_sleep_kib": native, "results": results}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
