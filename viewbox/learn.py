"""`viewbox learn`: run a command once, audited, and write the smallest policy that replays it.

The command runs under a base policy (default: the embedded `default`) with
an audit file in a private directory: the supervisor (layer 3) reports every
filesystem and exec call with the path as the program gave it. Each path is
then followed through the base policy's view the way the kernel would
(symlinks, `..`, the mounts of the plan) to find where it led: a host file
or directory, one of the base's own filesystems (tmpfs, /proc, /dev), or
nothing (a probe that failed, which needs no rule).

The learned policy starts from an empty root and shows only what the run
used, never more than the base showed:
- what was only read is `ro`; a file written in place is `rw`; a directory in
  which something was created, removed or renamed is `rw`;
- system trees (children of /usr/lib, /usr/share, /lib, /etc, ...) become one
  directory when several paths under one of them were used; user data stays
  precise: the files used, and a directory only when the program listed or
  wrote in it;
- executables, and the ELF interpreter or `#!` interpreter the kernel loads
  for them without a system call the audit could see, are listed;
- /proc and /dev are on when used; a tmpfs of the base is kept when the run
  wrote there;
- what the base hid inside a directory that is now shown stays hidden, and
  so does what a directory made writable for the entries the run created in
  it held besides, unused.

Paths are bound by the names the program used; every used path is then
followed through the learned view too, and what a symlink reaches outside it
is added, so that replay finds the same files.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import stat
import struct
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .errors import PolicyErrors, ViewboxError
from .plan import Base, MountKind, MountOp, Plan
from .policy import Policy, load_policy
from .policy.model import SCHEMA, TABLES, OrUnlimited, SizeCheck, expand, format_size, normalize, quote, toml_key
from .policy.parser import toml_value

# What a run needed of a path.
READ = 1      # a file read, executed or looked at: the file itself
LIST = 2      # a directory opened (listed, or used as the start of relative paths): all of it
EXISTS = 4    # a directory stat'ed or entered: it must be there
WRITE = 8     # a file written in place
MODIFY = 16   # a directory in which entries were created, removed or renamed
EXEC = 32     # a program run

#: Directories whose children are the units system paths are collapsed to:
#: /usr/lib/python3.11, /usr/lib/x86_64-linux-gnu, /usr/share/zoneinfo, /etc/ssl, ...
SYSTEM_CONTAINERS = (
    "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32", "/usr/libexec", "/usr/share", "/usr/include",
    "/usr/src", "/usr/local/lib", "/usr/local/lib64", "/usr/local/libexec", "/usr/local/share",
    "/usr/local/include", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/etc",
)
#: a system unit becomes one directory once this many paths under it were used
SYSTEM_COLLAPSE = 2
#: unused entries hidden in one directory the run created entries in (past this, none are)
MAX_HIDDEN = 64
#: rounds of following the used paths through the learned view and adding what they reach
FIX_ROUNDS = 8

_OPEN = {"open", "openat", "openat2", "creat"}
_META = {"stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat"}
_REMOVE = {"unlink", "unlinkat", "rmdir", "mkdir", "mkdirat"}
_RENAME = {"rename", "renameat", "renameat2"}
_LINK = {"link", "linkat"}
_SYMLINK = {"symlink", "symlinkat"}
_EXEC = {"execve", "execveat"}
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_TRUNC", "O_APPEND"}


# --- following paths through a view -------------------------------------------

class Place:
    """Where a path led in a view.

    kind: "host" (a host file or directory: `host`, covered by `mount`, a bind, or by the
    host base when None), "synthetic" (a directory the view made to hold mount points),
    "special" (inside or at a fresh filesystem of the view: `mount` is its tmpfs, proc,
    dev or hide) or "missing" (nothing there; `path` says where, with the rest of the
    path rewritten through the symlinks followed so far)."""

    __slots__ = ("kind", "path", "host", "mount")

    def __init__(self, kind: str, path: str, host: str | None = None, mount: MountOp | None = None) -> None:
        self.kind = kind
        self.path = path
        self.host = host
        self.mount = mount


def _ancestors(path: str) -> Iterator[str]:
    """`path` and its ancestors, deepest first ("/a/b", "/a", "/")."""
    while True:
        yield path
        if path == "/":
            return
        path = os.path.dirname(path)


def _is_within(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent + "/")


def _join(base: str, *parts: str) -> str:
    return normalize(os.path.join(base, *parts)) if parts else base


class View:
    """A view as csrc/mounts.c builds it from a plan: a base (the host's root, or an empty
    one holding only the directories mount points need) and mounts over it, binds showing
    a host path at the same path. `resolve` follows a path through it as the kernel would."""

    def __init__(self, base: Base, mounts: Iterable[MountOp]) -> None:
        self.host_base = base is Base.HOST
        self.mounts: dict[str, MountOp] = {}
        for mount in mounts:
            self.mounts[mount.target] = mount
        self.holders = {parent for target in self.mounts for parent in _ancestors(os.path.dirname(target))
                        if target != "/"}
        self._cache: dict[tuple[str, bool], Place] = {}

    def locate(self, path: str) -> Place:
        """Where `path` is, its parents being free of symlinks (as `resolve` walks)."""
        for ancestor in _ancestors(path):
            mount = self.mounts.get(ancestor)
            if mount is None:
                continue
            if mount.kind is MountKind.BIND:
                source = mount.source or mount.target
                host = source if path == ancestor else source.rstrip("/") + path[len(ancestor):]
                return Place("host", path, host, mount) if os.path.lexists(host) else Place("missing", path)
            if path == ancestor:
                return Place("special", path, mount=mount)
            if path in self.holders:
                return Place("synthetic", path)
            if mount.kind is MountKind.HIDE:
                return Place("missing", path)  # a hidden directory is empty
            return Place("special", path, mount=mount)
        if self.host_base:
            return Place("host", path, path) if os.path.lexists(path) else Place("missing", path)
        if path == "/" or path in self.holders:
            return Place("synthetic", path)
        return Place("missing", path)

    def resolve(self, path: str, follow: bool = True) -> Place:
        """Follows absolute `path` component by component (symlinks, `..`); `follow`: also a
        symlink in the last component."""
        key = (path, follow)
        if key not in self._cache:
            self._cache[key] = self._resolve(path, follow)
        return self._cache[key]

    def _resolve(self, path: str, follow: bool) -> Place:
        pending = [part for part in path.split("/") if part]
        current = "/"
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == ".":
                continue
            if name == "..":
                current = os.path.dirname(current)
                continue
            step = _join(current, name)
            place = self.locate(step)
            if place.kind == "missing":
                return Place("missing", _join(step, *pending))
            if place.kind == "special" and place.mount is not None and step != place.mount.target:
                return Place("special", _join(step, *pending), mount=place.mount)
            if place.kind == "host" and place.host and (pending or follow) and os.path.islink(place.host):
                hops += 1
                if hops > 40:  # ELOOP
                    return Place("missing", path)
                try:
                    target = os.readlink(place.host)
                except OSError:
                    return Place("missing", path)
                pending = [part for part in target.split("/") if part] + pending
                if target.startswith("/"):
                    current = "/"
                continue
            current = step
        return self.locate(current)


# --- what the run used ----------------------------------------------------------

class Need:
    """What the run needed of one path (named as the program named it, made absolute)."""

    __slots__ = ("path", "flags", "follow", "host")

    def __init__(self, path: str, host: str) -> None:
        self.path = path
        self.flags = 0
        self.follow = False
        self.host = host  # where it led in the base view ("" for a directory the view made)


class Usage:
    """Everything one audited run used, placed in the base view."""

    def __init__(self, base_view: View, workdir: str) -> None:
        self.view = base_view
        self.workdir = workdir
        self.needs: dict[str, Need] = {}
        self.tmpfs_written: set[str] = set()   # targets of the base's tmpfs mounts written to
        self.tmpfs_entered: set[str] = set()   # ... or whose top directory was used
        self.proc = False
        self.dev = False
        self.executables: list[str] = []
        self.interpreters: dict[str, str] = {}  # interpreter -> the program that needs it
        self.resolved_field = False             # events carried "resolved"
        self.calls = 0
        self._cwd: dict[int, str] = {}
        self._cwds: set[str] = set()

    # -- events --

    def add_event(self, event: Mapping[str, Any]) -> None:
        if event.get("event") != "syscall":
            return
        result = event.get("result")
        if isinstance(result, int) and result < 0:
            return  # it failed: nothing it asked for is needed
        name = str(event.get("syscall", ""))
        args = event.get("args") or {}
        pid = int(event.get("pid", 0))
        resolved = event.get("resolved")
        if isinstance(resolved, str) and resolved.startswith("/"):
            self.resolved_field = True
        else:
            resolved = None
        self.calls += 1
        path = args.get("path")
        path2 = args.get("path2")
        flags = set(str(args.get("flags", "")).split("|"))
        at_flags = set(str(args.get("at_flags", "")).split("|"))
        nofollow = "AT_SYMLINK_NOFOLLOW" in at_flags or "O_NOFOLLOW" in flags
        first = self._absolute(pid, args.get("dirfd"), path, resolved)
        if name in _OPEN:
            if first is None:
                return
            if "O_TMPFILE" in flags:
                self._need(first, MODIFY, True)
            elif name == "creat" or "O_CREAT" in flags:
                self._need(_parent(first), MODIFY, True)
            elif flags & _WRITE_FLAGS:
                self._need(first, WRITE, not nofollow)
            else:
                self._need(first, READ | LIST, not nofollow)
        elif name in _META:
            if first is not None:
                self._need(first, READ | EXISTS, not (nofollow or name in ("lstat", "readlink", "readlinkat")))
        elif name in _REMOVE:
            if first is not None and first != "/":
                self._need(_parent(first), MODIFY, True)
        elif name in _RENAME or name in _LINK:
            second = self._absolute(pid, args.get("dirfd2", args.get("dirfd")), path2, None)
            if first is not None and first != "/":
                self._need(_parent(first), MODIFY if name in _RENAME else EXISTS, True)
                if name in _LINK:
                    self._need(first, READ, "AT_SYMLINK_FOLLOW" in at_flags)
            if second is not None and second != "/":
                self._need(_parent(second), MODIFY, True)
        elif name in _SYMLINK:
            # path is the link's text; path2 the new link (its dirfd is the only one)
            second = self._absolute(pid, args.get("dirfd"), path2, resolved)
            if second is not None and second != "/":
                self._need(_parent(second), MODIFY, True)
        elif name == "truncate":
            if first is not None:
                self._need(first, WRITE, True)
        elif name == "chdir":
            if first is not None:
                place = self._need(first, EXISTS, True)
                if place is not None and place.kind != "missing":
                    self._cwd[pid] = place.path
                    self._cwds.add(place.path)
        elif name in _EXEC:
            if first is not None:
                self._exec(first)

    def _absolute(self, pid: int, dirfd: object, path: object, resolved: str | None) -> str | None:
        """The path a call named, absolute; None when it cannot be known (relative to a
        directory fd, or no path at all: AT_EMPTY_PATH)."""
        if not isinstance(path, str) or not path:
            return None
        if path.startswith("/"):
            return path
        if resolved:
            return resolved
        if dirfd not in (None, "AT_FDCWD"):
            return None
        cwd = self._cwd.get(pid)
        if cwd is not None:
            return _join_raw(cwd, path)
        # A process that did not chdir itself: most likely in the workdir, but a parent may
        # have changed directory before starting it; take the first directory the run was
        # seen in where the path exists.
        candidate = _join_raw(self.workdir, path)
        if self.view.resolve(candidate).kind == "missing":
            for cwd in sorted(self._cwds):
                other = _join_raw(cwd, path)
                if self.view.resolve(other).kind != "missing":
                    return other
        return candidate

    def _need(self, raw: str, flags: int, follow: bool) -> Place | None:
        """Records that the run needed `flags` of `raw` (absolute, as named)."""
        place = self.view.resolve(raw, follow)
        if place.kind == "missing":
            return place
        if place.kind == "special":
            self._special(place, flags)
            return place
        # Named as the program named it, unless it goes through "..": then by where it led,
        # and every directory before a ".." must be there too.
        parts = raw.split("/")
        if ".." in parts:
            for index, part in enumerate(parts):
                if part == "..":
                    before = "/".join(parts[:index]) or "/"
                    self._need(before, EXISTS, True)
            key = place.path
        else:
            key = normalize(raw)
        if key == "/":
            return place
        if place.kind == "synthetic":
            flags = EXISTS
            host = ""
        else:
            assert place.host is not None
            host = place.host
            try:
                is_dir = stat.S_ISDIR(os.stat(host).st_mode if follow else os.lstat(host).st_mode)
            except OSError:
                return place
            writable = place.mount is not None and place.mount.kind is MountKind.BIND and not place.mount.readonly
            if not writable:  # the base refused it (read-only): the run got EROFS, and so will replay
                flags = (flags & ~(WRITE | MODIFY)) | (READ if flags & WRITE else 0) | (EXISTS if flags & MODIFY else 0)
            flags &= (LIST | EXISTS | MODIFY) if is_dir else ~(LIST | EXISTS | MODIFY)
            if not flags:
                return place
        need = self.needs.get(key)
        if need is None:
            need = self.needs[key] = Need(key, host)
        need.flags |= flags
        need.follow = need.follow or follow
        return place

    def _special(self, place: Place, flags: int) -> None:
        mount = place.mount
        assert mount is not None
        if mount.kind is MountKind.PROC:
            self.proc = True
        elif mount.kind is MountKind.DEV:
            self.dev = True
        elif mount.kind is MountKind.TMPFS:
            if flags & (WRITE | MODIFY):
                self.tmpfs_written.add(mount.target)
            elif place.path == mount.target:
                self.tmpfs_entered.add(mount.target)

    def _exec(self, raw: str, depth: int = 0) -> None:
        place = self._need(raw, READ | EXEC, True)
        if place is None or place.kind != "host" or place.host is None or not os.path.isfile(place.host):
            return
        name = normalize(raw)
        if name not in self.executables:
            self.executables.append(name)
        interpreter = program_interpreter(place.host)
        if interpreter and depth < 4:
            self.interpreters.setdefault(normalize(interpreter), name)
            self._exec(interpreter, depth + 1)


def _parent(path: str) -> str:
    """The directory an entry named `path` is made or removed in: "out/" names "out" too."""
    return os.path.dirname(path.rstrip("/")) or "/"


def _join_raw(cwd: str, path: str) -> str:
    """cwd/path keeping "..": only the view can say where ".." leads."""
    return cwd.rstrip("/") + "/" + path


def program_interpreter(path: str) -> str | None:
    """The program the kernel loads to run `path` (no system call the audit sees): the
    ELF interpreter (PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2) or the `#!` line's."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            if head.startswith(b"#!"):
                words = head[2:].split(b"\n", 1)[0].split()
                return os.fsdecode(words[0]) if words and words[0].startswith(b"/") else None
            if head[:4] != b"\x7fELF" or len(head) < 64:
                return None
            wide = head[4] == 2
            order = "<" if head[5] == 1 else ">"
            if wide:
                (phoff,) = struct.unpack_from(order + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            else:
                (phoff,) = struct.unpack_from(order + "I", head, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for index in range(phnum):
                at = index * phentsize
                (kind,) = struct.unpack_from(order + "I", table, at)
                if kind != 3:  # PT_INTERP
                    continue
                if wide:
                    (offset,) = struct.unpack_from(order + "Q", table, at + 8)
                    (size,) = struct.unpack_from(order + "Q", table, at + 32)
                else:
                    (offset,) = struct.unpack_from(order + "I", table, at + 4)
                    (size,) = struct.unpack_from(order + "I", table, at + 16)
                f.seek(offset)
                text = f.read(min(size, 4096)).split(b"\0", 1)[0]
                return os.fsdecode(text) if text.startswith(b"/") else None
    except (OSError, struct.error, IndexError):
        return None
    return None


# --- the learned view ---------------------------------------------------------------

class Entry:
    """One path of the learned [fs]: `rw` or not, and why it is there."""

    __slots__ = ("rw", "why")

    def __init__(self, rw: bool, why: str) -> None:
        self.rw = rw
        self.why = why


class Learned:
    """The learned filesystem view, ready to render."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.tmpfs: dict[str, tuple[int, str]] = {}  # target -> (size in bytes, why)
        self.hide: dict[str, str] = {}       # target -> why
        self.proc = False
        self.dev = False
        self.workdir: str | None = None
        self.unreproduced: list[str] = []

    def view(self) -> View:
        mounts = [MountOp(MountKind.BIND, path, source=os.path.realpath(path), readonly=not entry.rw)
                  for path, entry in self.entries.items()]
        mounts += [MountOp(MountKind.TMPFS, path) for path in self.tmpfs]
        if self.proc:
            mounts.append(MountOp(MountKind.PROC, "/proc"))
        if self.dev:
            mounts.append(MountOp(MountKind.DEV, "/dev"))
        return View(Base.EMPTY, mounts)


def _unit(path: str) -> str | None:
    """The system directory `path` collapses to: the child of the deepest container holding
    it (/usr/lib/python3.11/os.py -> /usr/lib/python3.11); None outside system trees or
    for a direct child of a container (a file there stays precise)."""
    best = None
    for container in SYSTEM_CONTAINERS:
        if path.startswith(container + "/") and (best is None or len(container) > len(best)):
            best = container
    if best is None:
        return None
    rest = path[len(best) + 1:]
    return best + "/" + rest.split("/", 1)[0] if "/" in rest else None


def _tmpfs_size(mount: MountOp) -> int:
    match = re.search(r"size=(\d+)", mount.options or "")
    return int(match[1]) if match else 256 * 2**20


def build(usage: Usage, base_plan: Plan) -> Learned:
    """The smallest view that gives the run what it used (see the module's doc)."""
    learned = Learned()
    view = usage.view
    needs = usage.needs
    learned.proc, learned.dev = usage.proc, usage.dev
    base_tmpfs = {m.target: m for m in base_plan.mounts if m.kind is MountKind.TMPFS}
    for target in sorted(usage.tmpfs_written):
        learned.tmpfs[target] = (_tmpfs_size(base_tmpfs[target]), "written to")

    # Precise entries first.
    for path, need in needs.items():
        if need.flags & (WRITE | MODIFY):
            learned.entries[path] = Entry(True, "written" if need.flags & WRITE else
                                          "entries created, removed or renamed in it")
        elif need.flags & (READ | LIST | EXEC):
            if not os.path.exists(need.host):
                continue  # a symlink to nothing: only seen, never reached
            why = ("run" if need.flags & EXEC else "listed" if need.flags & LIST else "read")
            if path in usage.interpreters:
                why = f"interpreter of {usage.interpreters[path]}"
            learned.entries[path] = Entry(False, why)

    # System trees: one directory for several paths used under it.
    units: dict[str, list[str]] = {}
    for path in needs:
        unit = _unit(path)
        if unit is not None and path != unit:
            units.setdefault(unit, []).append(path)
    for unit, paths in units.items():
        if len(paths) < SYSTEM_COLLAPSE:
            continue
        place = view.resolve(unit)
        if place.kind != "host" or place.host is None or not os.path.isdir(place.host):
            continue
        current = learned.entries.get(unit)
        learned.entries[unit] = Entry(bool(current and current.rw), f"{len(paths)} paths used under it")
    # User data stays file by file, however many were read: a directory shown whole would
    # show what the run never touched (a home's .ssh/ beside the files it read).

    _drop_covered(learned)

    # Follow every used path through the learned view; add what a symlink reaches outside it,
    # and directories that must exist but hold nothing else used (deepest first: a directory
    # added makes its parents exist).
    ordered = sorted(needs.values(), key=lambda need: -need.path.count("/"))
    for _ in range(FIX_ROUNDS):
        learned_view = learned.view()
        added = False
        for need in ordered:
            place = learned_view.resolve(need.path, need.follow)
            if _reaches(place, need):
                continue
            fix = place.path if place.kind == "missing" else need.path
            where = view.resolve(fix)
            if (fix != "/" and fix not in learned.entries and where.kind == "host" and where.host
                    and os.path.exists(where.host)):
                rw = bool(need.flags & (WRITE | MODIFY)) and fix == need.path
                why = f"reached from {need.path}" if fix != need.path else \
                    "looked at: must exist" if need.flags == EXISTS else "used"
                learned.entries[fix] = Entry(rw, why)
                learned_view = learned.view()
                added = True
        if not added:
            break
    learned_view = learned.view()
    learned.unreproduced = sorted(path for path, need in needs.items()
                                  if not _reaches(learned_view.resolve(path, need.follow), need))

    # A tmpfs of the base whose top directory was used, when nothing else makes it exist.
    for target in sorted(usage.tmpfs_entered - set(learned.tmpfs)):
        if learned_view.resolve(target).kind == "missing":
            learned.tmpfs[target] = (_tmpfs_size(base_tmpfs[target]), "looked at")

    # The workdir, when the learned view has it (relative paths the run used make it so).
    if base_plan.workdir != "/" and learned.view().resolve(base_plan.workdir).kind != "missing":
        learned.workdir = base_plan.workdir

    _hide_unused_beside_writes(learned, needs)
    _keep_base_restrictions(learned, base_plan)
    return learned


def _hide_unused_beside_writes(learned: Learned, needs: Mapping[str, Need]) -> None:
    """A directory the run created entries in is writable whole, so that replay can create
    them again; what else it held when the run ended, unused, is hidden (a home's .ssh/ beside
    the job's output). Entries that appear there later are not (the learned file says so)."""
    for path, entry in list(learned.entries.items()):
        need = needs.get(path)
        if not entry.rw or need is None or not need.flags & MODIFY:
            continue
        host = os.path.realpath(path)
        try:
            names = sorted(os.listdir(host))
        except OSError:
            continue
        # a symlink is left alone: a hide would land on what it points to
        children = [_join(path, name) for name in names if not os.path.islink(os.path.join(host, name))]
        unused = [child for child in children
                  if child not in learned.entries and not any(_is_within(used, child) for used in needs)]
        if len(unused) > MAX_HIDDEN:
            entry.why += f"; its {len(unused)} unused entries are shown (more than {MAX_HIDDEN} to hide)"
            continue
        for child in unused:
            learned.hide[child] = "beside what the run created, unused (entries made later are shown)"


def _reaches(place: Place, need: Need) -> bool:
    """Does the learned view lead `need`'s path where the base view did?"""
    if place.kind == "synthetic":
        return not need.flags & ~EXISTS
    if place.kind != "host":
        return False
    if not need.follow or not need.host:
        return True
    return place.host == need.host or os.path.realpath(place.host or "") == os.path.realpath(need.host)


def _drop_covered(learned: Learned) -> None:
    """Entries inside another entry granting as much are that entry's already."""
    for path in sorted(learned.entries, key=len):
        entry = learned.entries.get(path)
        if entry is None:
            continue
        for ancestor in _ancestors(os.path.dirname(path)) if path != "/" else ():
            holder = learned.entries.get(ancestor)
            if holder is not None and (holder.rw or not entry.rw):
                del learned.entries[path]
                break


def _keep_base_restrictions(learned: Learned, base_plan: Plan) -> None:
    """What the base hid (or covered with its own tmpfs) inside a directory the learned
    policy shows stays hidden; what it bound read-only inside one now writable stays so."""
    shown = [(path, os.path.realpath(path), entry) for path, entry in learned.entries.items()]
    for mount in base_plan.mounts:
        if mount.kind not in (MountKind.HIDE, MountKind.TMPFS, MountKind.BIND):
            continue
        if mount.kind is MountKind.TMPFS and mount.target in learned.tmpfs:
            continue
        if not os.path.lexists(mount.target):
            continue
        real = os.path.realpath(mount.target)
        for path, source, entry in shown:
            if real == source or not real.startswith(source.rstrip("/") + "/"):
                continue
            inside = path.rstrip("/") + real[len(source.rstrip("/")):]
            if mount.kind is MountKind.BIND:
                if mount.readonly and entry.rw and inside not in learned.entries:
                    learned.entries[inside] = Entry(False, "read-only in the base policy")
            else:
                learned.hide[inside] = "hidden by the base policy" if mount.kind is MountKind.HIDE else \
                    "a private tmpfs in the base policy, unused"


# --- the network (viewbox learn --learn-net) ---------------------------------------------

#: what the learning run may reach: any name (as it resolves) and any address but the host's
#: own (a rule naming loopback would mean the host's services, which nothing learns its way to)
def learning_allowlist() -> list[str]:
    import ipaddress

    outside: list[str] = ["*:*"]
    for everything, own in (("0.0.0.0/0", ("0.0.0.0/8", "127.0.0.0/8")), ("::/0", ("::/128", "::1/128"))):
        networks = [ipaddress.ip_network(everything)]
        for excluded in map(ipaddress.ip_network, own):
            networks = [part for network in networks for part in
                        (network.address_exclude(excluded) if excluded.subnet_of(network) else [network])]  # type: ignore[arg-type]
        outside += [f"[{n}]:*" if n.version == 6 else f"{n}:*" for n in sorted(networks)]
    return outside


#: the sandbox's own network: what its own loopback answered needs no rule
_OWN_NETWORK = "the sandbox's own network"
_SENDS = {"connect", "sendto", "sendmsg", "sendmmsg"}
_DESTINATION = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[0-9.]+):(?P<port>\d+)(?: \((?P<name>[^)]+)\))?$")


class NetUse:
    """The destinations a run reached outside its sandbox, from the supervisor's events:
    "name:port" where the address came from a lookup, else "address:port"."""

    def __init__(self) -> None:
        self.destinations: dict[str, int] = {}   # "pypi.org:443" -> how many calls
        self.refused: set[str] = set()
        self._looked_up: dict[str, str] = {}     # address -> the name last resolved to it

    def add_event(self, event: Mapping[str, Any]) -> None:
        if event.get("event") == "dns" and event.get("decision") == "allow":
            # Two names may share an address (a CDN's): a connection is named after the
            # lookup that came last before it (the answer is logged before it is sent).
            for address in event.get("addresses") or ():
                self._looked_up[str(address)] = str(event.get("name"))
            return
        if event.get("event") != "syscall" or event.get("syscall") not in _SENDS:
            return
        match = _DESTINATION.match(str(event.get("resolved", "")))
        if not match or event.get("rule") == _OWN_NETWORK:
            return
        address = match["host"].strip("[]")
        name = self._looked_up.get(address) or match["name"] or match["host"]
        destination = f"{name}:{match['port']}"
        # a name is pinned to an address that is not globally routable only under an address
        # rule covering it (viewbox.views.dns): the learned policy names that address too
        private = name != match["host"] and not ipaddress.ip_address(address).is_global
        result = event.get("result")
        if event.get("decision") != "allow":
            self.refused.add(destination)
        elif not isinstance(result, int) or result >= 0 or result == -115:  # -EINPROGRESS: non-blocking
            for used in (destination, f"{match['host']}:{match['port']}") if private else (destination,):
                self.destinations[used] = self.destinations.get(used, 0) + 1


# --- rendering ------------------------------------------------------------------


#: fields the learned policy sets itself
_OWN_FIELDS = {"viewbox.version", "viewbox.description", "fs.base", "fs.ro", "fs.rw", "fs.hide",
               "fs.optional", "fs.tmpfs", "fs.proc", "fs.dev", "net.mode", "process.workdir"}


def _kept_from_base(policy: Policy, cwd: str, learned_net: bool = False) -> dict[str, list[str]]:
    """The base policy's settings besides the view (identity, env, limits, seccomp, rules),
    as TOML lines per table: the command ran with them."""
    out: dict[str, list[str]] = {}
    own = _OWN_FIELDS | {"net.allow"} if learned_net else _OWN_FIELDS
    for table, specs in SCHEMA.items():
        section = getattr(policy, table)
        defaults = TABLES[table]()
        for key, spec in specs.items():
            if spec.attr is None or spec.name in own:
                continue
            value = getattr(section, spec.attr)
            if value == getattr(defaults, spec.attr) or value is None:
                continue
            if spec.name == "identity.home":
                value = expand(value, cwd=cwd)
            elif isinstance(_unwrapped(spec.check), SizeCheck) and isinstance(value, int):
                value = format_size(value)
            lines = out.setdefault(table, [])
            if isinstance(value, Mapping):
                items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
                lines.append(f"{toml_key(key)} = {{ {items} }}")
            elif isinstance(value, tuple):
                lines.append(f"{toml_key(key)} = [{', '.join(toml_value(item) for item in value)}]")
            else:
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
    return out


def _from_base(body: list[str]) -> list[str]:
    return ["# as in the base policy:", *body] if body else []


def _shell_join(argv: Sequence[str]) -> str:
    import shlex

    return shlex.join(argv)


def _oneline(text: str) -> str:
    """`text` fit for a comment: control characters (a newline would end it) escaped."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda match: f"\\x{ord(match[0]):02x}", text)


def render(learned: Learned, usage: Usage, *, argv: Sequence[str], base: Policy, cwd: str,
           out: str, status: int, net: NetUse | None = None) -> str:
    """The learned policy as a commented TOML file."""
    command = _oneline(_shell_join(argv))
    who = f"uid {os.geteuid()}"
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    lines = [
        f"# Learned by `viewbox learn` on {when} from one run of:",
        f"#   {command}",
        f"# started in {_oneline(cwd)} as {who}, within the policy {quote(base.name or 'default')}"
        + (f" (exit status {status})." if status else "."),
        "# It shows only what that run used (an empty root, then the paths below), never",
        "# more than that policy showed. Replay:",
        f"#   viewbox run --policy {_oneline(_shell_join([out]))} -- {command}",
        f"# {usage.calls} audited calls; executables run: {_oneline(', '.join(usage.executables)) or 'none'}.",
        "# Relative paths: " + ("as the supervisor resolved them." if usage.resolved_field else
                                "joined to the directory each process last changed to (else the workdir)."),
    ]
    if learned.unreproduced:
        lines.append("# Not reproducible in an empty root (reached through a symlink into a private filesystem,")
        lines.append("# or relative to an unknown directory): " + _oneline(", ".join(learned.unreproduced[:10]))
                     + (" ..." if len(learned.unreproduced) > 10 else ""))
    description = f"Learned from: {_shell_join(argv)}"
    if len(description) > 120:
        description = description[:117] + "..."
    kept = _kept_from_base(base, cwd, learned_net=net is not None)
    lines += ["", "[viewbox]", "version = 1", f"description = {quote(description)}",
              "extends = []  # standalone: what it shows is all below"]
    lines += kept.pop("viewbox", [])
    lines += ["", "[fs]", 'base = "empty"']
    for key, rw in (("ro", False), ("rw", True)):
        paths = sorted(path for path, entry in learned.entries.items() if entry.rw == rw)
        lines.append(f"{key} = [" if paths else f"{key} = []")
        if paths:
            width = max(len(quote(path)) for path in paths) + 1
            lines += [f"    {(quote(path) + ','):<{width}}  # {_oneline(learned.entries[path].why)}" for path in paths]
            lines.append("]")
    if learned.tmpfs:  # private and empty at each start, as in the base policy
        lines.append("tmpfs = [")
        lines += [f"    {quote(f'{path}:{format_size(size)}')},  # {why}: private, empty at each start"
                  for path, (size, why) in sorted(learned.tmpfs.items())]
        lines.append("]")
    if learned.hide:
        lines.append("hide = [")
        lines += [f"    {quote(path)},  # {_oneline(why)}" for path, why in sorted(learned.hide.items())]
        lines.append("]")
    # Per-path rules (kept from the base) are decided by the broker, which needs /proc.
    rules = bool(getattr(base.fs, "rules", ()))
    proc_why = "used" if learned.proc else "needed by the path rules" if rules else "not used"
    lines.append(f"proc = {toml_value(learned.proc or rules)}  # {proc_why}")
    lines.append(f"dev = {toml_value(learned.dev)}" + ("  # used" if learned.dev else "  # not used"))
    lines += _from_base(kept.pop("fs", []))
    if net is None:
        lines += ["", "[net]",
                  "# Network use was not learned (viewbox learn --learn-net learns it):",
                  '# "none" gives the command loopback only.']
        if base.net.mode != "none":
            lines.append(f"# The base policy had mode = {quote(base.net.mode)}: set it here if the command needs it.")
        lines += ['mode = "none"', *_from_base(kept.pop("net", []))]
    else:
        lines += ["", "[net]",
                  "# The destinations the run reached (by name where it looked the address up), each",
                  "# opened by the supervisor; nothing else outside is reachable, no other name resolves.",
                  'mode = "none"']
        destinations = sorted(net.destinations)
        lines.append("allow = [" if destinations else "allow = []")
        if destinations:
            width = max(len(quote(d)) for d in destinations) + 1
            lines += [f"    {(quote(d) + ','):<{width}}  # {n} call{'s' if n > 1 else ''}"
                      for d, n in ((d, net.destinations[d]) for d in destinations)]
            lines.append("]")
        names = any(not d[0].isdigit() and not d.startswith("[") for d in destinations)
        base_net = [line for line in kept.pop("net", []) if names or not line.startswith("dns =")]
        lines += _from_base(base_net)
    process = _from_base(kept.pop("process", []))
    if learned.workdir:
        process.insert(0, f"workdir = {quote(learned.workdir)}  # where the run started")
    if process:
        lines += ["", "[process]", *process]
    for table, body in kept.items():
        lines += ["", f"[{table}]", *_from_base(body)]
    return "\n".join(lines) + "\n"


# --- the command --------------------------------------------------------------------

def read_events(path: str) -> Iterator[dict[str, Any]]:
    """The audit file's events, one per line (a torn last line is skipped)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


def learn(argv: Sequence[str], *, out: str, base: str | None = None, force: bool = False,
          learn_net: bool = False) -> int:
    """Runs `argv` under the policy `base` (default: "default"), audited, writes the learned
    policy to `out` and returns the command's exit status (as `viewbox run` would). With
    `learn_net` the run may also reach any name and address outside the host (mode "none"
    with an allowlist of everything but the host's loopback) and `out` allows what it used."""
    from .cli import FORWARDED, spawn_forwarding_signals
    from .quota import LIMIT_EXIT_STATUS
    from .sandbox import Sandbox

    if not argv:
        raise ViewboxError("no command given (usage: viewbox learn -o OUT [--policy BASE] -- CMD [ARGS...])")
    target = os.path.abspath(out)
    if os.path.isdir(target):
        raise ViewboxError(f"{out}: is a directory")
    if os.path.lexists(target) and not force:
        raise ViewboxError(f"{out}: already exists (--force replaces it)")
    if not os.path.isdir(os.path.dirname(target)) or not os.access(os.path.dirname(target), os.W_OK):
        raise ViewboxError(f"{out}: cannot write in {os.path.dirname(target)}")
    # With --learn-net the base is checked with the allowlist it runs under: its [net].dns may
    # be there for the names the run will look up.
    try:
        policy = load_policy(base, overrides={"allow_net": learning_allowlist()} if learn_net else None)
    except PolicyErrors as err:
        if learn_net and all(error.field == "api: allow_net" for error in err.errors):
            raise ViewboxError('--learn-net learns [net].allow, which needs mode "none"; the base policy\'s '
                               "[net].mode is another") from None
        raise
    cwd = os.getcwd()
    net = NetUse() if learn_net else None
    with tempfile.TemporaryDirectory(prefix="viewbox-learn-") as private:
        audit = os.path.join(private, "audit.jsonl")
        box = Sandbox(policy=policy, audit=audit, deny_notes=True)
        plan = box.compile(argv)
        proc = spawn_forwarding_signals(box, argv)
        returncode = proc.wait()
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        limit = proc.usage.limit if proc.usage else None
        if limit and proc.usage:
            print(f"viewbox: killed: {proc.usage.reason}", file=sys.stderr)
        status = LIMIT_EXIT_STATUS if limit else 128 - returncode if returncode < 0 else returncode
        usage = Usage(View(plan.base, plan.mounts), plan.workdir)
        for event in read_events(audit):
            usage.add_event(event)
            if net:
                net.add_event(event)
    learned = build(usage, plan)
    text = render(learned, usage, argv=argv, base=policy, cwd=cwd, out=out, status=status, net=net)
    try:
        _write_checked(target, text, force=force, argv=argv)
    except OSError as err:
        raise ViewboxError(f"{out}: {os.strerror(err.errno) if err.errno else err}") from None
    paths = len(learned.entries) + len(learned.tmpfs)
    destinations = f", {len(net.destinations)} destinations" if net else ""
    print(f"viewbox: learned {paths} paths, {len(usage.executables)} executables{destinations} -> {out}",
          file=sys.stderr)
    if status:
        print(f"viewbox: the command exited with status {status}: the policy may miss what a "
              "successful run needs", file=sys.stderr)
    return status


def _write_checked(target: str, text: str, *, force: bool, argv: Sequence[str]) -> None:
    """Writes `text` to `target` once the policy loader and compiler accept it."""
    from .policy import check_policy_file
    from .sandbox import Sandbox

    directory, name = os.path.split(target)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".toml", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # Loaded, then compiled for this host (every path it binds exists).
        Sandbox(policy=check_policy_file(temporary)).compile(argv)
        if force:
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        else:
            try:
                with open(target, "x", encoding="utf-8") as f:  # never over a file that appeared meanwhile
                    f.write(text)
            except FileExistsError:
                raise ViewboxError(f"{target}: already exists (--force replaces it)") from None
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _unwrapped(check: object) -> object:
    """A field's own check, without the "unlimited" of a limit that may be lifted."""
    return check.check if isinstance(check, OrUnlimited) else check
