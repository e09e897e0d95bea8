"""Interposition edges (issue 15, part 1): scripts under exec rules, DNS pinning
and a bounded resolver, the sandbox's hostname, unix sockets under path
rules, and learn granting only what was used."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import textwrap

from conftest import ATTACKS, INSIDE_PYTHON, Caller

# --- scripts under exec rules -----------------------------------------------------


def _script(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(0o755)
    return path


def test_which_runs_under_a_rule_that_covers_exec(as_user: Caller) -> None:
    """/usr/bin/which is a #! /bin/sh script: its process's exe is dash, not the file checked."""
    done = as_user.run(["--deny", "**/*.secret", "--", "/usr/bin/which", "ls"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/usr/bin/ls"


def test_scripts_of_every_shape_run_under_exec_rules(as_user: Caller, world_dir: pathlib.Path) -> None:
    """sh runs a bash script, python a sh script, a script goes through env, and a script's
    interpreter is itself a script: each runs as natively under a rule that covers exec."""
    inner = _script(world_dir / "inner", """
        #!/bin/bash
        echo "inner:$BASH_VERSION:$#:$(basename "$1")"
        """)
    _script(world_dir / "nested", f"#!{inner}\n")
    _script(world_dir / "viabash", '#!/bin/bash\necho "bash:$BASH_VERSION"\n')
    _script(world_dir / "viash", "#! /bin/sh\necho sh:$0\n")
    _script(world_dir / "viaenv", '#!/usr/bin/env bash\necho "env:$BASH_VERSION"\n')
    driver = textwrap.dedent(f"""
        set -e
        {world_dir}/viabash
        {INSIDE_PYTHON} -c 'import subprocess; subprocess.run(["{world_dir}/viash"], check=True)'
        {world_dir}/viaenv
        {world_dir}/nested
        """)
    native = as_user.native(["/bin/sh", "-c", driver])
    assert native.returncode == 0, native.stderr
    done = as_user.run(["--ro", str(world_dir), "--deny", "exec:/nonexistent/**", "--", "/bin/sh", "-c", driver])
    assert done.returncode == 0, done.stderr
    assert done.stdout == native.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("bash:5") and lines[1] == f"sh:{world_dir}/viash"
    assert lines[2].startswith("env:5") and lines[3] == "inner:" + lines[0][5:] + ":1:nested"


def test_a_scripts_interpreter_is_decided_by_the_exec_rules(as_user: Caller, world_dir: pathlib.Path) -> None:
    """The kernel execs a script's interpreter without a call of its own: a denied interpreter
    must not run by naming it on a #! line (natively it does)."""
    shutil.copy("/bin/echo", world_dir / "banned")
    script = _script(world_dir / "run-banned", f"#!{world_dir}/banned BANNED-INTERPRETER-RAN\n")
    native = as_user.native([str(script)])
    assert "BANNED-INTERPRETER-RAN" in native.stdout
    done = as_user.run(["--ro", str(world_dir), "--deny", "exec:**/banned", "--", str(script)])
    assert "BANNED-INTERPRETER-RAN" not in done.stdout
    assert done.returncode == 126, done.stderr  # the exec failed (EACCES), nothing was killed
    direct = as_user.run(["--ro", str(world_dir), "--deny", "exec:**/banned", "--", "/bin/sh", "-c",
                          f"{script} || echo refused"])
    assert direct.stdout.strip() == "refused", direct.stdout + direct.stderr


def test_a_script_swapped_for_a_denied_program_is_killed(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """The exec race of test_rules with an allowed script: the check still tells a swapped-in
    program from the script's interpreter, and the allowed script still runs."""
    binary = shared_dir / "exec_race"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(ATTACKS / "exec_race.c")], check=True)
    bins = shared_dir / "bins"
    bins.mkdir(mode=0o755)
    _script(bins / "allowed", "#!/bin/sh\necho ALLOWED-SCRIPT-RAN\n")
    shutil.copy("/bin/echo", bins / "denied")  # prints its argument, if it gets that far
    native = as_user.native([str(binary), "2", str(bins / "allowed"), str(bins / "denied")])
    assert "DENIED-PROGRAM-RAN" in native.stdout, "natively the race must run the denied program"
    done = as_user.run(["--ro", str(shared_dir), "--deny", "exec:**/bins/denied", "--",
                        str(binary), "5", str(bins / "allowed"), str(bins / "denied")], timeout=60)
    assert done.returncode == 0, done.stderr
    assert "DENIED-PROGRAM-RAN" not in done.stdout
    assert "ALLOWED-SCRIPT-RAN" in done.stdout
    assert int(done.stderr.split("children=")[1].split()[0]) > 20  # the race really ran
