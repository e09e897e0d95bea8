"""viewbox ships py.typed: the annotations of its public API must hold, under mypy --strict."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import viewbox


def test_the_package_type_checks_strictly(tmp_path: pathlib.Path) -> None:
    package = pathlib.Path(viewbox.__file__).parent  # the viewbox under test, installed or not
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                           "--cache-dir", str(tmp_path), str(package)],
                          capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
