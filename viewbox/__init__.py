"""viewbox: run a stranger's code in its own view of the world.

    import viewbox
    result = viewbox.run(["sh", "-c", "id; ls /"])              # default policy
    result = viewbox.run(["python3", "job.py"], policy="python", rw=["/srv/out"])

    with viewbox.Sandbox(policy="daemon") as box:
        proc = box.spawn(["./server"], stdout=viewbox.PIPE)
        ...

See `viewbox --help` and the README for policies, flags and the threat model.
"""
__version__ = "0.1.0"

from .errors import (CommandNotExecutable, CommandNotFound, PolicyError, PolicyErrors,
                     SpawnError, TimeoutExpired, UnavailableLayer, ViewboxError)
from .ask import Decision, Request
from .policy import Policy, load_policy
from .sandbox import DEVNULL, PIPE, Event, Process, Result, Sandbox, run

__all__ = [
    "run", "Sandbox", "Process", "Result", "Event", "PIPE", "DEVNULL", "Request", "Decision",
    "Policy", "load_policy", "probe", "Probe",
    "ViewboxError", "PolicyError", "PolicyErrors", "UnavailableLayer", "SpawnError",
    "CommandNotFound", "CommandNotExecutable", "TimeoutExpired",
    "__version__",
]


def __getattr__(name: str) -> object:
    # doctor probes the kernel and is not needed to run: imported on first use
    if name in ("probe", "Probe"):
        from . import doctor

        return getattr(doctor, name)
    raise AttributeError(f"module 'viewbox' has no attribute {name!r}")
