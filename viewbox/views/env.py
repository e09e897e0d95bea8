"""The environment view: the command's variables, built from scratch.

Nothing comes from the host unless the policy names it ([env].pass), so
tokens and keys in the caller's environment never leak in by accident.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from viewbox.policy.model import expand

if TYPE_CHECKING:
    from viewbox.policy.model import Policy
    from viewbox.views import CompileContext

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_LANG = "C.UTF-8"


def contribute(policy: Policy, context: CompileContext) -> dict[str, object]:
    host = context.host_env
    env = {"PATH": BASE_PATH, "LANG": host.get("LANG", DEFAULT_LANG)}
    if "TERM" in host:  # terminal handling stays right when run interactively
        env["TERM"] = host["TERM"]
    env["HOME"] = expand(policy.identity.home, cwd=context.cwd)
    env.update({name: host[name] for name in policy.env.pass_ if name in host})
    env.update(policy.env.set)
    return {"env": env}
