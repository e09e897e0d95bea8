"""Policy -> Plan: a loop over the views, each contributing the Plan fields it owns."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from viewbox.errors import PolicyError, PolicyErrors, ViewboxError
from viewbox.plan import Plan
from viewbox.policy.model import Policy, normalize
from viewbox.views import CompileContext, env, fs, ids, limits, net, time

VIEWS = (fs, net, ids, env, limits, time)
#: the views whose fields constrain one another (check(policy) -> errors)
CHECKED_VIEWS = (fs, net, time)


def validate(policy: Policy) -> list[PolicyError]:
    """Every mistake in what `policy`'s values say together, without asking the host anything:
    the one check that loading (run, show, check) and compiling share."""
    return [error for view in CHECKED_VIEWS for error in view.check(policy)]


def compile_policy(policy: Policy, *, argv: Sequence[str], cwd: str, host_env: Mapping[str, str],
                   landlock_abi: int, caller_uid: int, caller_gid: int) -> Plan:
    """The Plan running `argv` under `policy` for this caller, on a kernel with `landlock_abi`.

    Raises PolicyErrors for a policy validate() refuses (one not made by load_policy) and for
    what only the run can reveal (a bind source missing on this host, a {cwd} too wide),
    UnavailableLayer when Landlock is missing and not accepted as degraded.
    """
    if not argv:
        raise ViewboxError("no command given")
    errors = validate(policy)
    if errors:
        raise PolicyErrors(errors)
    context = CompileContext(cwd=normalize(cwd), host_env=host_env, landlock_abi=landlock_abi,
                             caller_uid=caller_uid, caller_gid=caller_gid)
    fields: dict[str, object] = {"argv": tuple(argv)}
    for view in VIEWS:
        part = view.contribute(policy, context)
        assert not part.keys() & fields.keys(), f"{view.__name__} sets a Plan field another view owns"
        fields.update(part)
    return Plan(**fields)  # type: ignore[arg-type]
