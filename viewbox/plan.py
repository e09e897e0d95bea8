"""The Plan: what a compiled policy asks the C core to do, flat and typed.

The policy compiler (viewbox.policy.compiler) produces a Plan; viewbox.core
turns it into a `struct vb_plan` (csrc/viewbox.h). Nothing here decides
policy: it only describes the steps.
"""
from __future__ import annotations

import enum
from ._record import field, record


class MountKind(enum.IntEnum):
    """Mirrors VB_MOUNT_* in csrc/viewbox.h."""

    BIND = 1
    TMPFS = 2
    PROC = 3
    DEV = 4
    HIDE = 5


class Base(enum.IntEnum):
    """Mirrors VB_BASE_*: what the view starts from before the mounts."""

    HOST = 1
    EMPTY = 2


@record
class MountOp:
    kind: MountKind
    target: str
    source: str | None = None
    readonly: bool = False
    optional: bool = False
    options: str | None = None


@record
class LandlockRule:
    path: str
    access: int


class Access(enum.IntFlag):
    """Mirrors VB_ACCESS_*: the kinds of access a path rule covers."""

    READ = 1    # open for reading, stat, access, readlink, listing a directory
    WRITE = 2   # open for writing, create, truncate, unlink, rename, link, mkdir, symlink
    EXEC = 4    # execve


class RuleAction(enum.IntEnum):
    """Mirrors VB_RULE_*: what a matching path rule decides."""

    ALLOW = 1
    DENY = 2
    ASK = 3     # the caller's side decides (the API's on_request, the CLI's prompt)


@record
class PathRule:
    """One per-path rule (layer 3): `glob` is absolute, over canonical paths inside the view."""

    glob: str
    access: Access
    action: RuleAction
    origin: str     # where it was written: "p.toml:7: [fs].deny[1]", "--deny", "api: deny"


@record
class ListenSpec:
    """A socket viewbox binds on the host and passes in at fd 3 + its index (LISTEN_FDS)."""

    name: str           # its LISTEN_FDNAMES entry
    kind: str           # "tcp" or "unix"
    host: str = ""      # tcp: address to bind
    port: int = 0       # tcp: port to bind
    path: str = ""      # unix: the socket file on the host


@record
class PublishSpec:
    """The host's host:host_port, forwarded by the sandbox's forwarder to 127.0.0.1:port inside."""

    host: str
    host_port: int
    port: int


@record
class NetRule:
    """A destination of [net].allow: connect() to it is performed by the supervisor, from the host."""

    network: str        # "10.1.2.0/24", "::1/128"
    port_min: int
    port_max: int
    origin: str         # where it was written: "p.toml:9: [net].allow[0]", "--allow-net"


@record
class NetName:
    """A name of [net].allow: it resolves inside, through viewbox, and the addresses it resolves
    to become NetRules of the sandbox (pinned) with its ports."""

    name: str           # "pypi.org", "*.example.com" (any name under example.com), "*" (any name)
    port_min: int
    port_max: int
    origin: str

    def matches(self, name: str) -> bool:
        """Whether `name` (lower case, no final dot) is this rule's."""
        if self.name == "*":
            return True
        if self.name.startswith("*."):
            return name.endswith(self.name[1:]) and len(name) > len(self.name) - 1
        return name == self.name


@record
class Rlimit:
    resource: int
    soft: int
    hard: int


@record
class Plan:
    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    hostname: str | None
    base: Base
    mounts: tuple[MountOp, ...]
    unshare_net: bool
    uid: int
    gid: int
    landlock_abi: int = 0
    landlock_handled_fs: int = 0
    landlock_scopes: int = 0
    landlock_rules: tuple[LandlockRule, ...] = ()
    seccomp_deny_groups: int = 0
    rlimits: tuple[Rlimit, ...] = ()
    # Layers the policy accepted to run without, each with the reason.
    degraded: tuple[str, ...] = ()
    # The command's wall-time limit in ms (0: none), held by the sandbox's init.
    wall_ms: int = 0
    # Per-path rules in order: the last one matching a path and access decides.
    path_rules: tuple[PathRule, ...] = ()
    # The time view (viewbox.views.time): the sandbox's own clock when time_view.
    time_view: bool = False
    time_start_ns: int | None = None   # CLOCK_REALTIME at the start, ns since the epoch
    time_offset_ns: int = 0            # else: the host's CLOCK_REALTIME plus this
    time_rate: float = 1.0             # virtual seconds per real second
    time_frozen: bool = False          # still, but for the sandbox's own sleeps
    time_strict: bool = False          # the host's uptime hidden (rdtsc, times, /proc files)
    time_file_times: bool = False      # stat results and explicit utimes on the sandbox's clock
    # Extra fds passed in, host fd -> fd number inside (stdio is added at spawn).
    pass_fds: dict[int, int] = field(default_factory=dict)
    # [net].mode "private": a namespace viewbox wires up (veth, NAT) before the spawn
    private_network: bool = False
    # [net].listen: bound at spawn, passed in from fd 3 on with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES.
    listen: tuple[ListenSpec, ...] = ()
    # [net].publish: host ports the sandbox's forwarder relays to ports inside.
    publish: tuple[PublishSpec, ...] = ()
    # [net].allow: destinations the supervisor connects to for the sandbox (layer 3).
    net_allow: tuple[NetRule, ...] = ()
    # [net].allow's names: the sandbox gets a resolver (127.0.0.53) that answers only these,
    # from `dns_servers` ("ADDRESS:PORT", "[ADDRESS]:PORT"; none: the host's getaddrinfo).
    net_names: tuple[NetName, ...] = ()
    dns_servers: tuple[str, ...] = ()

    @property
    def path_search(self) -> str:
        return self.env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
