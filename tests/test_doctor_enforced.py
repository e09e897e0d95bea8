"""`viewbox doctor` says what `viewbox run` then enforces, for root and for nobody.

Each layer doctor reports available is checked by its effect inside a run,
not by reading configuration back."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import Caller
from unpriv import run_unprivileged

# Runs inside the sandbox: what each layer looks like from the inside.
INSIDE = r"""
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
def refused(nr, *args):
    return libc.syscall(nr, *args) == -1 and ctypes.get_errno() == errno.EPERM
try:
    os.kill(1, 0)          # the sandbox's init is outside the Landlock domain
    signal_scoped = False
except PermissionError:
    signal_scoped = True
print(json.dumps({
    "seccomp": status["Seccomp"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "cap_eff": status["CapEff"].strip(),
    "pid": os.getpid(),
    "netdevs": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]),
    "hostname": os.uname().nodename,
    "signal_scoped": signal_scoped,
    "bpf_refused": refused(321, 0, 0, 0),
}))
"""


def _doctor_and_run(user: str) -> tuple[dict, dict]:
    doctor_args = ["-m", "viewbox", "doctor", "--json"]
    run_args = ["-m", "viewbox", "run", "--", "python3", "-c", INSIDE]
    if user == "root":
        doctor = subprocess.run([sys.executable, *doctor_args], capture_output=True, text=True, cwd="/")
        run = subprocess.run([sys.executable, *run_args], capture_output=True, text=True, cwd="/")
    else:
        doctor = run_unprivileged(doctor_args, capture_output=True, text=True)
        run = run_unprivileged(run_args, capture_output=True, text=True, cwd="/")
    assert doctor.returncode == 0, doctor.stderr
    assert run.returncode == 0, run.stderr
    return json.loads(doctor.stdout), json.loads(run.stdout)


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_doctor_report_matches_run(user: str) -> None:
    report, inside = _doctor_and_run(user)
    layers = {layer["name"]: layer for layer in report["layers"]}
    # doctor says the namespaces work for this user; the run proves it:
    assert layers["userns"]["available"] and layers["pidns"]["available"]
    assert inside["pid"] == 2                     # own pid namespace, under viewbox's init
    assert layers["netns"]["available"] and inside["netdevs"] == ["lo"]
    assert layers["utsns"]["available"] and inside["hostname"] == "viewbox"
    # seccomp: doctor says filters work; inside, a filter is installed and bpf() is refused
    assert layers["seccomp"]["available"]
    assert inside["seccomp"] == "2" and inside["bpf_refused"]
    assert inside["no_new_privs"] == "1" and int(inside["cap_eff"], 16) == 0
    # Landlock: doctor's ABI decides whether the signal scope (ABI >= 6) holds inside
    assert inside["signal_scoped"] == (report["landlock_abi"] >= 6)


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_doctor_time_layers_match_a_time_view_run(user: str) -> None:
    """A [time] table needs the time namespace, the init's tracing and the supervisor (which
    answers clock reads): doctor says they work, and a run with a clock of its own then really
    reads that clock (not the host's)."""
    caller = Caller(user)
    doctor = caller.cli(["doctor", "--json"])
    run = caller.run(["--time-start", "2009-04-21T12:00:00Z", "--", "date", "-u", "+%Y"])
    layers = {layer["name"]: layer for layer in json.loads(doctor.stdout)["layers"]}
    assert layers["timens"]["available"] and layers["time-trace"]["available"]
    assert layers["seccomp-notify"]["available"]
    assert run.returncode == 0 and run.stdout == "2009\n", run.stderr
