"""Run Python as an unprivileged user against the viewbox under test.

Tests run as root, and the built package usually lives where nobody cannot
read it (/root is mode 0700). So the package, the shipped policies beside it
(source checkout) and cffi's `_cffi_backend` extension are copied into a
world-readable directory, and Debian's /usr/bin/python3 (3.11, the same ABI
as the build interpreter) runs as uid/gid 65534 with that PYTHONPATH.
"""
from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import Any

import _cffi_backend

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"

# Build leftovers the copy does not need.
_IGNORE = shutil.ignore_patterns("__pycache__", "*.o", "_core.c")


def _package_dir() -> pathlib.Path:
    # Located, not imported: the copy is what the unprivileged process imports.
    spec = importlib.util.find_spec("viewbox")
    assert spec is not None and spec.submodule_search_locations, "viewbox is not importable"
    return pathlib.Path(next(iter(spec.submodule_search_locations))).resolve()


def unprivileged_pythonpath(tmp_dir: str | os.PathLike[str]) -> str:
    """Copies viewbox and `_cffi_backend` into `tmp_dir`/pythonpath, readable
    and traversable by everyone, and returns that directory for PYTHONPATH.

    `tmp_dir` is made mode 0755; its ancestors must already let others
    through (pytest's tmp_path does not: its base is mode 0700).
    """
    base = pathlib.Path(tmp_dir).resolve()
    for ancestor in base.parents:
        if not os.stat(ancestor).st_mode & 0o001:
            raise PermissionError(f"{ancestor}: not traversable by others, so neither is {base}")
    base.chmod(0o755)
    dest = base / "pythonpath"
    package = _package_dir()
    shutil.copytree(package, dest / "viewbox", ignore=_IGNORE)
    # A source checkout keeps the shipped policies beside the package.
    policies = package.parent / "policies"
    if policies.is_dir() and not (package / "policies").exists():
        shutil.copytree(policies, dest / "policies", ignore=_IGNORE)
    shutil.copy(_cffi_backend.__file__, dest)
    # Pure-Python dependencies the system Python may lack (dnspython: the resolver of [net].allow's names).
    for name in ("dns",):
        module = importlib.util.find_spec(name)
        assert module is not None and module.submodule_search_locations, f"{name} is not importable"
        shutil.copytree(next(iter(module.submodule_search_locations)), dest / name, ignore=_IGNORE)
    # The umask and the source modes decide what the copies got: open them up.
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return str(dest)


@functools.cache
def _shared_pythonpath() -> str:
    # mkdtemp makes a 0700 dir under /tmp (1777); unprivileged_pythonpath opens it.
    tmp_dir = tempfile.mkdtemp(prefix="viewbox-unpriv-")
    atexit.register(shutil.rmtree, tmp_dir, ignore_errors=True)
    return unprivileged_pythonpath(tmp_dir)


def run_unprivileged(args: list[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
    """Runs `/usr/bin/python3 *args` as uid/gid 65534 with no supplementary
    groups, importing the viewbox under test. Keyword arguments go to
    subprocess.run (defaults: capture_output, text, timeout=60, cwd="/");
    an `env` given is used with PYTHONPATH added."""
    env = dict(kw.pop("env", {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}))
    env["PYTHONPATH"] = _shared_pythonpath()
    # the sanitizer build (README) needs its runtime in the viewbox process too
    env.update({k: v for k, v in os.environ.items() if k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")})
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    kw.setdefault("cwd", "/")
    return subprocess.run([SYSTEM_PYTHON, *args], env=env, user=NOBODY, group=NOBODY,
                          extra_groups=[], **kw)
