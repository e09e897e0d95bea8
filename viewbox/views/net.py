"""The network view: the sandbox's own network namespace, or (explicitly, unsafely) the host's.

"none" gives a namespace with only loopback up; "host" shares the host's
interfaces, so the sandbox can reach everything the caller can.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from viewbox.policy.model import Policy
    from viewbox.views import CompileContext


def contribute(policy: Policy, context: CompileContext) -> dict[str, object]:
    return {"unshare_net": policy.net.mode == "none"}
