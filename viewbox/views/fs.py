"""The filesystem view: which paths exist inside, how they are made, and what Landlock allows there.

The C core applies the mount ops in order inside the sandbox's mount
namespace; Landlock then restricts access beneath those mounts again, so a
mistake in one layer is still held by the other. Per-path rules ([fs].deny,
ask, allow) go to the supervisor, which decides path calls at syscall time.
"""
from __future__ import annotations

import enum
import os
import stat
from viewbox._record import record, replace
from typing import TYPE_CHECKING

from viewbox.errors import PolicyError, PolicyErrors, UnavailableLayer
from viewbox.plan import Access, Base, LandlockRule, MountKind, MountOp, PathRule, RuleAction
from viewbox.policy.model import expand, expand_glob, os_reason, quote
from viewbox.views.time import strict_hidden

if TYPE_CHECKING:
    from viewbox.policy.model import Origin, Policy
    from viewbox.views import CompileContext

# Landlock filesystem access rights (LANDLOCK_ACCESS_FS_*, linux/landlock.h).
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13       # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14    # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15   # ABI 5

# (first ABI, rights it added); ABIs 4, 6 and 7 added network, scope and audit features only.
_FS_RIGHTS_BY_ABI = (
    (1, (1 << 13) - 1),
    (2, ACCESS_FS_REFER),
    (3, ACCESS_FS_TRUNCATE),
    (5, ACCESS_FS_IOCTL_DEV),
)

# LANDLOCK_SCOPE_*, ABI 6: the sandbox may not reach abstract unix sockets or signal processes outside it.
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1
_SCOPES_SINCE_ABI = 6

READ_EXECUTE = ACCESS_FS_EXECUTE | ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
PROC_RIGHTS = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR | ACCESS_FS_WRITE_FILE
DEV_RIGHTS = ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_DIR | ACCESS_FS_IOCTL_DEV
# Landlock refuses directory rights in a rule on a file (EINVAL): a file rule keeps only these.
FILE_RIGHTS = (ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE
               | ACCESS_FS_IOCTL_DEV)

TMPFS_MODE = "1777"
DEV_SHM_SIZE = 64 * 2**20  # /dev/shm, unless [limits].disk is smaller


def handled_access(abi: int) -> int:
    """Every filesystem right Landlock ABI `abi` knows (0 for no Landlock)."""
    handled = 0
    for since, rights in _FS_RIGHTS_BY_ABI:
        if abi >= since:
            handled |= rights
    return handled


class _Treatment(enum.IntEnum):
    """How a path listed in [fs] is made. When several lists name one path, the highest wins:
    the one granting most access, which is also what Landlock's union of their rules would give."""

    HIDE = 1
    TMPFS = 2
    RO = 3
    RW = 4


@record
class _Listed:
    """A path from one of the [fs] lists, placeholders expanded."""

    target: str
    treatment: _Treatment
    field: str     # "fs.ro": with index, finds the value's origin
    index: int
    size: int = 0  # tmpfs bytes
    #: where the target lands in the view: its symlinks resolved as the host's, in the host
    #: base, whose symlinks they are; the target itself in the empty base, which has none
    place: str = ""
    #: the host path it shows (binds) or hides (hides): the target with the host's symlinks resolved
    real: str = ""


#: top-level trees of the system: {cwd} never widens the view to one, nor to anything in the
#: first ones (the system's own files); in /var, /opt and /srv services keep their own directories
_SYSTEM_TREES = ("/usr", "/etc", "/bin", "/sbin", "/boot", "/sys", "/proc", "/dev")
_SERVICE_TREES = ("/var", "/opt", "/srv")


def check(policy: Policy) -> list[PolicyError]:
    """What [fs]'s fields say wrong together (paths holding placeholders are checked at compile)."""
    fs = policy.fs
    errors: list[PolicyError] = []
    own = {"/proc": ("proc", fs.proc), "/dev": ("dev", fs.dev)}
    for field, paths in (("fs.ro", fs.ro), ("fs.rw", fs.rw), ("fs.hide", fs.hide),
                         ("fs.tmpfs", tuple(mount.path for mount in fs.tmpfs))):
        for index, path in enumerate(paths):
            error = _own_conflict(path, own, policy.origin(field, index), policy.label(field, index))
            if error:
                errors.append(error)
    if fs.rules and not fs.proc:
        # the broker names what a call reached by its /proc/self/fd link: no /proc, no decision
        errors.append(policy.origin("fs.proc").error(
            "[fs].proc", "per-path rules ([fs].deny, ask, allow, rules) need /proc in the view: "
                         "set proc = true or drop the rules"))
    return errors


def _own_conflict(target: str, own: dict[str, tuple[str, bool]], origin: Origin, label: str) -> PolicyError | None:
    name, mounted = own.get(target, ("", False))
    if not mounted:
        return None
    return origin.error(label, f"{target} is the sandbox's own (with {name} = true); "
                               f"set {name} = false to put something else there")


def missing_sources(policy: Policy) -> list[PolicyError]:
    """The ro and rw paths (placeholders aside) this host lacks and [fs].optional does not excuse."""
    fs = policy.fs
    errors = []
    for field, paths in (("fs.ro", fs.ro), ("fs.rw", fs.rw)):
        for index, path in enumerate(paths):
            if path in fs.optional or "{" in path:
                continue
            try:
                os.stat(path)
            except OSError as err:
                errors.append(policy.origin(field, index).error(policy.label(field, index),
                                                                f"{path}: {os_reason(err)}"))
    return errors


# Plan fields owned by this view: base, mounts, workdir, path_rules, landlock_*, degraded.
def contribute(policy: Policy, context: CompileContext) -> dict[str, object]:
    base = Base.HOST if policy.fs.base == "host" else Base.EMPTY
    handled = handled_access(context.landlock_abi)
    errors: list[PolicyError] = []
    # Each mount with the Landlock rules (path, rights) its path gets.
    placed: list[tuple[MountOp, list[tuple[str, int]]]] = []
    places: dict[MountOp, str] = {}
    if policy.fs.proc:
        placed.append((MountOp(MountKind.PROC, "/proc"), [("/proc", PROC_RIGHTS)]))
    if policy.fs.dev:
        # /dev/shm is a tmpfs too: [limits].disk caps it like the others
        shm = f"size={min(DEV_SHM_SIZE, policy.limits.disk or DEV_SHM_SIZE)},mode=1777"
        placed.append((MountOp(MountKind.DEV, "/dev", options=shm),
                       [("/dev", DEV_RIGHTS), ("/dev/shm", handled)]))
    optional = {expand(path, cwd=context.cwd) for path in policy.fs.optional}
    errors += _cwd_too_wide(policy, context)
    listed = _listed_paths(policy, context.cwd, base)
    # Each mount goes where its path lands in the view: parents first, so `hide = ["/home"]` with
    # `rw = ["/home/u/proj"]` shows the project in an empty /home, and a hidden path is hidden
    # after every bind that shows it (the sort is stable: equal depths keep their order here).
    for entry in listed:
        mount = _mount(entry, policy, handled, optional, errors)
        if mount is not None:
            placed.append(mount)
            places[mount[0]] = entry.place
    if policy.fs.rules or strict_hidden(policy):
        from viewbox.doctor import seccomp_addfd_layer  # the kernel version only: cheap

        addfd = seccomp_addfd_layer(0)
        if not addfd.available:
            raise UnavailableLayer("seccomp ADDFD", addfd.detail, addfd.consequence)
    if errors:
        raise PolicyErrors(errors)
    placed.sort(key=lambda mount: _depth(places.get(mount[0], mount[0].target)))
    mounts = tuple(op for op, _ in placed)

    fields: dict[str, object] = {
        "base": base,
        "mounts": mounts,
        "workdir": _workdir(policy, context.cwd, base, mounts),
        "path_rules": _path_rules(policy, context.cwd),
    }
    if context.landlock_abi < 1:
        if "landlock" not in policy.viewbox.accept_degraded:
            raise UnavailableLayer(
                "Landlock", "the kernel reports no Landlock support",
                "enable CONFIG_SECURITY_LANDLOCK and add landlock to the lsm= boot parameter, "
                'or set accept_degraded = ["landlock"] in [viewbox]')
        return fields | {"landlock_abi": 0, "degraded": ("landlock: not supported by this kernel",)}

    root_rights = READ_EXECUTE if base is Base.HOST else ACCESS_FS_READ_DIR
    rules = [LandlockRule("/", root_rights)]
    rules += [LandlockRule(path, rights & handled)
              for _, mount_rules in placed for path, rights in mount_rules if rights & handled]
    scopes = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if context.landlock_abi >= _SCOPES_SINCE_ABI else 0
    return fields | {
        "landlock_abi": context.landlock_abi,
        "landlock_handled_fs": handled,
        "landlock_scopes": scopes,
        "landlock_rules": tuple(rules),
    }


def _listed_paths(policy: Policy, cwd: str, base: Base) -> list[_Listed]:
    """The [fs] list entries, one per place in the view (see _Treatment), in declaration order,
    with the hides that keep a hidden path hidden wherever a bind shows it (see _hides)."""
    fs = policy.fs
    listed = [
        _Listed(expand(path, cwd=cwd), treatment, field, index)
        for treatment, field, paths in ((_Treatment.RO, "fs.ro", fs.ro), (_Treatment.RW, "fs.rw", fs.rw),
                                        (_Treatment.HIDE, "fs.hide", fs.hide))
        for index, path in enumerate(paths)
    ]
    # [limits].disk caps every writable tmpfs area: writing past it fails with ENOSPC.
    disk = policy.limits.disk
    listed += [_Listed(expand(mount.path, cwd=cwd), _Treatment.TMPFS, "fs.tmpfs", index,
                       min(mount.size, disk) if disk else mount.size)
               for index, mount in enumerate(fs.tmpfs)]
    # The sandbox's own /proc and /dev are no host paths: the host's symlinks there
    # (/proc/self, /dev/fd) would name the host's processes.
    own = tuple(path for path, mounted in (("/proc", fs.proc), ("/dev", fs.dev)) if mounted)
    listed = [replace(entry, real=entry.target if any(_is_within(entry.target, path) for path in own)
                      else os.path.realpath(entry.target))
              for entry in listed]
    if base is Base.HOST:
        # The host base shows the host's symlinks, but not under a tmpfs or a hidden directory.
        covers = [entry.real for entry in listed if entry.treatment in (_Treatment.HIDE, _Treatment.TMPFS)]
        listed = [replace(entry, place=_place(entry.target, entry.real, covers)) for entry in listed]
    else:
        listed = [replace(entry, place=entry.target) for entry in listed]
    binds = [entry for entry in listed if entry.treatment in (_Treatment.RO, _Treatment.RW)]
    hides = [entry for entry in listed if entry.treatment is _Treatment.HIDE]
    others = [entry for entry in listed if entry.treatment is not _Treatment.HIDE]
    by_place: dict[str, _Listed] = {}
    for entry in others + _hides(hides, binds, base):
        if entry.place not in by_place or entry.treatment > by_place[entry.place].treatment:
            by_place[entry.place] = entry
    return list(by_place.values())


def _place(target: str, real: str, covers: list[str]) -> str:
    """Where `target` lands in the host base: through the host's symlinks (`real` is the target
    with all of them resolved) up to where a tmpfs or hidden directory replaces the host's tree."""
    if not any(_is_within(target, cover) or _is_within(real, cover) for cover in covers):
        return real
    resolved = "/"
    parts = [part for part in target.split("/") if part]
    for count, part in enumerate(parts):
        candidate = os.path.join(resolved, part)
        if any(_is_within(candidate, cover) for cover in covers):
            return os.path.join(candidate, *parts[count + 1:])
        resolved = os.path.realpath(candidate)
    return resolved


def _hides(hides: list[_Listed], binds: list[_Listed], base: Base) -> list[_Listed]:
    """The hide mounts: a hidden host path is hidden where the base shows it (the host base: at its
    real path; the empty base: at the path as written) and under every bind showing an ancestor of
    it, under whatever name the bind shows that ancestor (a symlink, a bind at another target). A
    bind of the hidden path itself, under any name, names it: that shows it."""
    out = []
    for hide in hides:
        if any(bind.real == hide.real for bind in binds):
            continue
        if base is Base.HOST:
            out.append(replace(hide, target=hide.real, place=hide.real))
        else:
            out.append(hide)
        for bind in binds:
            if _is_within(hide.real, bind.real) and hide.real != bind.real:
                rest = hide.real[len(bind.real.rstrip("/")):]
                out.append(replace(hide, target=bind.target.rstrip("/") + rest,
                                   place=bind.place.rstrip("/") + rest))
    return out


def _cwd_too_wide(policy: Policy, context: CompileContext) -> list[PolicyError]:
    """An ro or rw path holding {cwd} must not show "/", a system tree or a whole home directory
    (nor, for hide and tmpfs, cover "/"): a command started in the wrong directory would get it."""
    errors = []
    fs = policy.fs
    homes: set[str] | None = None
    for field, paths in (("fs.ro", fs.ro), ("fs.rw", fs.rw), ("fs.hide", fs.hide),
                         ("fs.tmpfs", tuple(mount.path for mount in fs.tmpfs))):
        for index, path in enumerate(paths):
            if "{cwd}" not in path:
                continue
            target = os.path.realpath(expand(path, cwd=context.cwd))
            if field in ("fs.hide", "fs.tmpfs"):
                what = "the whole filesystem" if target == "/" else None
            else:
                if homes is None:
                    homes = _home_directories(context)
                what = _too_wide(target, homes)
            if what is None:
                continue
            flag = "--" + field.removeprefix("fs.")
            errors.append(policy.origin(field, index).error(
                policy.label(field, index),
                f"{quote(path)} is {quote(target)}, {what}: {{cwd}} never widens the view to /, a system "
                f"tree or a whole home directory; start in a narrower directory (a project's) or name "
                f"one ({flag} DIR)"))
    return errors


def _home_directories(context: CompileContext) -> set[str]:
    """/root, /home, every directory in /home, and the caller's own home ($HOME and its
    passwd entry's), each also with its symlinks resolved."""
    import pwd

    homes = {"/root", "/home"}
    try:
        homes.update(os.path.join("/home", name) for name in os.listdir("/home"))
    except OSError:
        pass
    if context.host_env.get("HOME", "").startswith("/"):
        homes.add(context.host_env["HOME"])
    try:
        homes.add(pwd.getpwuid(context.caller_uid).pw_dir)
    except KeyError:
        pass
    return homes | {os.path.realpath(home) for home in homes}


def _too_wide(target: str, homes: set[str]) -> str | None:
    """What `target` would show that {cwd} must not, or None."""
    if target == "/":
        return "the whole filesystem"
    top = "/" + target.split("/")[1]
    if top in _SYSTEM_TREES or top.startswith("/lib"):
        return f"in the system tree {top}" if top != target else "a system tree"
    if target in _SERVICE_TREES:
        return "a system tree"
    for home in sorted(homes):
        if home != "/" and _is_within(home, target):
            if home == target:
                return "the directory of the home directories" if target == "/home" else "a home directory"
            return f"a directory holding the home directory {home}"
    return None


def _mount(listed: _Listed, policy: Policy, handled: int, optional: set[str],
           errors: list[PolicyError]) -> tuple[MountOp, list[tuple[str, int]]] | None:
    """The mount op for a listed path and its Landlock rules; None when impossible (with an
    error) or when an optional path is absent (without)."""
    origin = policy.origin(listed.field, listed.index)
    label = policy.label(listed.field, listed.index)
    target = listed.target
    # check() refused the paths written so; this is for those {cwd} made so
    own = {"/proc": ("proc", policy.fs.proc), "/dev": ("dev", policy.fs.dev)}
    conflict = _own_conflict(target, own, origin, label)
    if conflict:
        errors.append(conflict)
        return None
    if listed.treatment is _Treatment.HIDE:
        return MountOp(MountKind.HIDE, target, optional=True), []
    if listed.treatment is _Treatment.TMPFS:
        options = f"size={listed.size},mode={TMPFS_MODE}"
        return MountOp(MountKind.TMPFS, target, options=options), [(target, handled)]
    try:
        is_dir = stat.S_ISDIR(os.stat(target).st_mode)
    except FileNotFoundError as err:
        if target not in optional:
            errors.append(origin.error(label, f"{target}: {os_reason(err)}"))
        return None
    except OSError as err:
        errors.append(origin.error(label, f"{target}: {os_reason(err)}"))
        return None
    readonly = listed.treatment is _Treatment.RO
    rights = READ_EXECUTE if readonly else handled
    if not is_dir:
        rights &= FILE_RIGHTS
    # A symlink (such as /bin -> usr/bin on merged-/usr systems) is bound as its target, at the
    # symlink's own path: the view has no symlinks of its own, and the plan names the real source.
    source = os.path.realpath(target)
    return MountOp(MountKind.BIND, target, source=source, readonly=readonly), [(target, rights)]


def _path_rules(policy: Policy, cwd: str) -> tuple[PathRule, ...]:
    """[fs].rules for the C core, in order, placeholders filled in, each naming where it was written;
    then the time view's strict refusals (last: nothing lifts them)."""
    rules = tuple(PathRule(expand_glob(rule.glob, cwd=cwd), rule.access, rule.action,
                           str(policy.origin("fs.rules", index)))
                  for index, rule in enumerate(policy.fs.rules))
    origin = str(policy.origin("time.strict"))
    return rules + tuple(PathRule(glob, Access.READ | Access.WRITE | Access.EXEC, RuleAction.DENY, origin)
                         for glob in strict_hidden(policy))


def _depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


def _is_within(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent + "/")


def _workdir(policy: Policy, cwd: str, base: Base, mounts: tuple[MountOp, ...]) -> str:
    """[process].workdir, or by default the caller's directory if the view shows it, else "/"."""
    if policy.process.workdir is not None:
        return expand(policy.process.workdir, cwd=cwd)
    covering = [op for op in mounts if _is_within(cwd, op.target)]
    deepest = max(covering, key=lambda op: _depth(op.target), default=None)
    # The host's own directory is there only through a bind, or the host base where nothing covers it.
    visible = deepest.kind is MountKind.BIND if deepest else base is Base.HOST
    return cwd if visible else "/"
