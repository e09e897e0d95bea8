"""The time view: the sandbox's own clock.

[time].start places the sandbox's CLOCK_REALTIME at an instant when it starts
(it runs on from there); [time].offset shifts the host's instead; rate scales
how fast it runs (sleeps and timeouts scale with it); frozen stops it except
for the sandbox's own sleeps, which jump it forward; strict also traps rdtsc.
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
