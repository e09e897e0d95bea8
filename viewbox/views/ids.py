"""The identity view: who the sandbox is (uid, gid inside its user namespace) and its hostname."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from viewbox.policy.model import Policy
    from viewbox.views import CompileContext


def contribute(policy: Policy, context: CompileContext) -> dict[str, object]:
    identity = policy.identity
    return {
        "uid": context.caller_uid if identity.uid is None else identity.uid,
        "gid": context.caller_gid if identity.gid is None else identity.gid,
        "hostname": identity.hostname,
    }
