"""viewbox ships py.typed: the annotations of its public API must hold, under mypy --strict."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import viewbox


def test_the_package_type_checks_strictly(tmp_path: pathlib.Path) -> None:
    # A copy of the viewbox under test (installed or in a source tree), checked on its own:
    # mypy must not take site-packages itself for a source tree.
    source = tmp_path / "src"
    shutil.copytree(pathlib.Path(viewbox.__file__).parent, source / "viewbox",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o", "*.c"))
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                           "--cache-dir", str(tmp_path / "cache"), "-p", "viewbox"],
                          capture_output=True, text=True, cwd=source)
    assert done.returncode == 0, done.stdout + done.stderr
