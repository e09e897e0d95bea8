"""Views: one module per view of the world the sandbox gets (fs, net, ids, env, limits, time).

Each view module exposes `contribute(policy, context) -> dict`: the Plan fields
it owns, computed from the policy and the run's context. The compiler
(viewbox.policy.compiler) is a loop over them; every Plan field has exactly
one owning view.

Import rule: viewbox.policy.model imports constants from views (the syscall
group names), so a view imports the model at run time only if the model does
not import that view.
"""
from __future__ import annotations

from collections.abc import Mapping
from viewbox._record import record


@record
class CompileContext:
    """What a compile knows about the run besides the policy."""

    cwd: str                    # the caller's working directory on the host, normalised
    host_env: Mapping[str, str]  # the caller's environment: only named variables get in
    landlock_abi: int           # probed Landlock ABI version, 0 when absent
    caller_uid: int
    caller_gid: int
