"""The time view: the sandbox's own clock.

[time].start places the sandbox's CLOCK_REALTIME at an instant when it starts
(it runs on from there); [time].offset shifts the host's instead; rate scales
how fast it runs (sleeps and timeouts scale with it); frozen stops it except
for the sandbox's own sleeps, which jump it forward; strict also hides the
host's uptime; file_times = "sandbox" puts files' times on the sandbox's clock.
The C core (csrc/sys_time.c) does the rest: a time namespace, the supervisor
answering clock reads, and the sandbox's init tracing the command to rescale waits.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from viewbox.policy.model import instant_ns, offset_ns

if TYPE_CHECKING:
    from viewbox.errors import PolicyError
    from viewbox.policy.model import Policy
    from viewbox.views import CompileContext

#: Files of the sandbox's /proc that show the host's uptime, which a time namespace does not
#: shift: per-task scheduler clocks (sched's se.exec_start, in ms since the host booted; the
#: schedstat next to it), the time namespace's own offsets (the host's uptime at the start,
#: negated) and /proc/uptime's idle field. A per-task file exists only once its task does, so
#: no mount can cover it: under strict, path rules refuse them (the fs view adds these after
#: the policy's own, so no allow lifts them).
STRICT_HIDDEN = ("/proc/*/sched", "/proc/*/schedstat", "/proc/*/timens_offsets",
                 "/proc/*/task/*/sched", "/proc/*/task/*/schedstat", "/proc/uptime")


def file_times_on_sandbox_clock(policy: Policy) -> bool:
    """[time].file_times; unset, "host": on the sandbox's clock every stat call costs more, with
    path rules too (benchmark row 3 under --time-offset with a rule ran 2.9x slower with it)."""
    return policy.time.file_times == "sandbox"


def strict_hidden(policy: Policy) -> tuple[str, ...]:
    """The globs of STRICT_HIDDEN when the policy asks for them (strict, with a /proc to hide in)."""
    return STRICT_HIDDEN if policy.time.strict and policy.fs.proc else ()


def contribute(policy: Policy, context: CompileContext) -> dict[str, object]:
    clock = policy.time
    if not clock.active:
        return {"time_view": False}
    return {
        "time_view": True,
        "time_start_ns": None if clock.start is None else instant_ns(clock.start),
        "time_offset_ns": 0 if clock.offset is None else offset_ns(clock.offset),
        "time_rate": clock.rate,
        "time_frozen": clock.frozen,
        "time_strict": clock.strict,
        "time_file_times": file_times_on_sandbox_clock(policy),
    }


def check(policy: Policy) -> list[PolicyError]:
    """[time].start and .offset both place the clock: only one of them may be set."""
    clock = policy.time
    if clock.start is None or clock.offset is None:
        return []
    start = policy.origin("time.start")
    return [policy.origin("time.offset").error(
        "[time].offset", f"cannot be combined with [time].start (set {'by ' if start.flag else 'at '}{start}): "
                         "start places the clock at an instant, offset shifts the host's")]
