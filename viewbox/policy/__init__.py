"""Policies: load (TOML files, extends, overrides), check, show, and compile to a Plan."""
from viewbox.policy.compiler import compile_policy
from viewbox.policy.loader import SHIPPED, PolicyRef, check_policy_file, load_policy, shipped_path
from viewbox.policy.model import (
    EnvTable, FsTable, GlobRule, IdentityTable, LimitsTable, NetTable, Origin, Policy, ProcessTable,
    SeccompTable, TmpfsMount, ViewboxTable,
)
from viewbox.policy.parser import render_policy
from viewbox.views.limits import denied_syscall_groups

__all__ = [
    "SHIPPED",
    "EnvTable",
    "FsTable",
    "GlobRule",
    "IdentityTable",
    "LimitsTable",
    "NetTable",
    "Origin",
    "Policy",
    "PolicyRef",
    "ProcessTable",
    "SeccompTable",
    "TmpfsMount",
    "ViewboxTable",
    "check_policy_file",
    "compile_policy",
    "denied_syscall_groups",
    "load_policy",
    "render_policy",
    "shipped_path",
]
