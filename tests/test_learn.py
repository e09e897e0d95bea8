"""`viewbox learn`: one audited run writes a policy that replays the same command and
shows nothing the command did not use. Each real program is learned within a base
policy (the default one, plus the test's directory writable), then replayed with
`viewbox run --policy LEARNED`, as root and as user nobody."""
from __future__ import annotations

import json
import pathlib
import textwrap

from conftest import HOST_ENV, INSIDE_PYTHON, Caller

JOB = textwrap.dedent("""
    import json, sys
    first, second, out = sys.argv[1:]
    with open(first) as a, open(second) as b:
        data = {"a": a.read(), "b": b.read()}
    with open(out, "w") as f:
        json.dump(data, f)
""")


def _base_policy(directory: pathlib.Path) -> pathlib.Path:
    """The default policy with `directory` (under /tmp, which default covers) writable."""
    base = directory / "base.toml"
    base.write_text(f'[viewbox]\nversion = 1\nextends = ["default"]\n\n[fs]\nrw = ["{directory}"]\n')
    return base


def _dirs(root: pathlib.Path, *names: str, mode: int = 0o755) -> list[pathlib.Path]:
    made = []
    for name in names:
        path = root / name
        path.mkdir()
        path.chmod(mode)
        made.append(path)
    return made


def test_learned_python_policy_replays_and_shows_nothing_else(as_user: Caller, shared_dir: pathlib.Path) -> None:
    code, data, other = _dirs(shared_dir, "code", "data", "other")
    (out,) = _dirs(shared_dir, "out", mode=0o777)
    job = code / "job.py"
    job.write_text(JOB)
    (data / "a.txt").write_text("alpha")
    (data / "b.txt").write_text("beta")
    secret = other / "secret.txt"
    secret.write_text("not for the job")
    base = _base_policy(shared_dir)
    learned = shared_dir / "learned.toml"
    command = [INSIDE_PYTHON, str(job), str(data / "a.txt"), str(data / "b.txt"), str(out / "result.json")]

    done = as_user.cli(["learn", "-o", str(learned), "--policy", str(base), "--", *command])
    assert done.returncode == 0, done.stderr
    assert f"-> {learned}" in done.stderr and "viewbox: learned " in done.stderr
    assert json.loads((out / "result.json").read_text()) == {"a": "alpha", "b": "beta"}
    text = learned.read_text()
    assert 'base = "empty"' in text and 'mode = "none"' in text
    assert as_user.cli(["check", str(learned)]).returncode == 0

    # Replay: the same command, under the learned policy only, does the same job.
    (out / "result.json").unlink()
    replay = as_user.run(["--policy", str(learned), "--", *command])
    assert replay.returncode == 0, replay.stderr + text
    assert json.loads((out / "result.json").read_text()) == {"a": "alpha", "b": "beta"}

    # A file in a directory the script never touched: there under the base policy, not under the learned one.
    peek = [INSIDE_PYTHON, "-c", f"print(open({str(secret)!r}).read())"]
    under_base = as_user.run(["--policy", str(base), "--", *peek])
    assert (under_base.returncode, under_base.stdout) == (0, "not for the job\n"), under_base.stderr
    under_learned = as_user.run(["--policy", str(learned), "--", *peek])
    assert under_learned.returncode == 1 and "FileNotFoundError" in under_learned.stderr, under_learned.stdout
    assert str(other) not in text


def test_learn_keeps_an_existing_file_unless_forced(as_user: Caller, shared_dir: pathlib.Path) -> None:
    learned = shared_dir / "learned.toml"
    learned.write_text("# mine\n")
    learned.chmod(0o666)
    refused = as_user.cli(["learn", "-o", str(learned), "--", "true"])
    assert refused.returncode == 125 and "already exists" in refused.stderr
    assert learned.read_text() == "# mine\n"
    # The command's status is learn's, and the policy is written all the same.
    forced = as_user.cli(["learn", "-o", str(learned), "--force", "--", "sh", "-c", "exit 3"])
    assert forced.returncode == 3, forced.stderr
    assert 'base = "empty"' in learned.read_text()
    assert as_user.cli(["check", str(learned)]).returncode == 0


def test_learned_git_status_replays(as_user: Caller, shared_dir: pathlib.Path) -> None:
    repo = shared_dir / "repo"
    env = {**HOST_ENV, "HOME": "/nonexistent"}
    setup = (f"mkdir {repo} && cd {repo} && git init -q && echo tracked > kept.txt && git add kept.txt && "
             "git -c user.name=t -c user.email=t@example.org commit -qm init && echo new > kept.txt && "
             "echo untracked > fresh.txt")
    made = as_user.native(["sh", "-c", setup], env=env)  # the caller's own repository
    assert made.returncode == 0, made.stderr
    base = _base_policy(shared_dir)
    learned = shared_dir / "git.toml"

    done = as_user.cli(["learn", "-o", str(learned), "--policy", str(base), "--", "git", "status"], cwd=str(repo))
    assert done.returncode == 0, done.stderr
    assert "modified:   kept.txt" in done.stdout and "fresh.txt" in done.stdout

    replay = as_user.run(["--policy", str(learned), "--", "git", "status"], cwd=str(repo))
    assert replay.returncode == 0, replay.stderr + learned.read_text()
    assert replay.stdout == done.stdout


def test_learned_gcc_build_replays(as_user: Caller, shared_dir: pathlib.Path) -> None:
    (src,) = _dirs(shared_dir, "src")
    (bin_dir,) = _dirs(shared_dir, "bin", mode=0o777)
    (src / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello, learned"); return 0; }\n')
    base = _base_policy(shared_dir)
    learned = shared_dir / "gcc.toml"
    command = ["gcc", "-O1", "-o", str(bin_dir / "hello"), str(src / "hello.c")]

    done = as_user.cli(["learn", "-o", str(learned), "--policy", str(base), "--", *command])
    assert done.returncode == 0, done.stderr
    (bin_dir / "hello").unlink()

    replay = as_user.run(["--policy", str(learned), "--", *command])
    assert replay.returncode == 0, replay.stderr + learned.read_text()
    ran = as_user.native([str(bin_dir / "hello")])
    assert (ran.returncode, ran.stdout) == (0, "hello, learned\n")


def test_learn_help_teaches_the_replay() -> None:
    done = Caller("root").cli(["learn", "--help"])
    assert done.returncode == 0
    assert "viewbox learn -o" in done.stdout and "viewbox run --policy" in done.stdout


def test_the_kernel_loaded_interpreter_is_found() -> None:
    # The ELF interpreter is opened by the kernel at exec, unseen by the audit.
    from viewbox.learn import program_interpreter

    loader = program_interpreter(INSIDE_PYTHON)
    assert loader is not None and loader.startswith("/") and pathlib.Path(loader).exists()
