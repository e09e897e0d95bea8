"""Every shipped policy (policies/*.toml) parses, compiles, and runs a smoke
command through the CLI, as root and as user nobody."""
from __future__ import annotations

import pathlib
import tomllib

import pytest

import viewbox
from conftest import TESTS, Caller
from viewbox.plan import Base, Plan
from viewbox.policy import SHIPPED, check_policy_file, shipped_path

REPO_POLICIES = TESTS.parent / "policies"


def test_every_policy_file_is_shipped() -> None:
    if not REPO_POLICIES.is_dir():
        pytest.skip("not a source checkout: no policies/ beside tests/")
    assert sorted(SHIPPED) == sorted(path.stem for path in REPO_POLICIES.glob("*.toml"))
    assert {"default", "strict"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_policy_parses_and_compiles(name: str) -> None:
    path = shipped_path(name)
    policy = check_policy_file(path)
    plan = viewbox.Sandbox(policy=policy).compile(["sh", "-c", "echo ok"])
    assert isinstance(plan, Plan)
    assert plan.argv == ("sh", "-c", "echo ok")
    assert plan.seccomp_deny_groups, "every shipped policy keeps the seccomp baseline"
    assert plan.unshare_net, "no shipped policy shares the host network"


@pytest.mark.parametrize("name", SHIPPED)
def test_viewbox_check_accepts_it(name: str) -> None:
    done = Caller("root").cli(["check", str(shipped_path(name))])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


@pytest.mark.parametrize("name", SHIPPED)
def test_viewbox_show_prints_toml(name: str) -> None:
    done = Caller("root").cli(["show", "--policy", name])
    assert done.returncode == 0, done.stderr
    tomllib.loads(done.stdout)


@pytest.mark.parametrize("name", SHIPPED)
def test_policy_runs_a_smoke_command(as_user: Caller, name: str, shared_dir: pathlib.Path) -> None:
    # Run from a scratch directory: some policies make the starting directory ({cwd}) writable.
    done = as_user.run(["--policy", name, "--", "sh", "-c", "echo ok; id -u; pwd"], cwd=str(shared_dir))
    assert done.returncode == 0, done.stderr
    ok, uid, pwd = done.stdout.splitlines()
    assert (ok, uid) == ("ok", str(as_user.uid))
    # one line, when the policy names no workdir and its view hides the starting directory
    hidden = viewbox.Sandbox(policy=name).policy.process.workdir is None and pwd == "/"
    note = f"viewbox: the current directory {shared_dir} is hidden in the view: the command starts in /\n"
    assert done.stderr == (note if hidden else "")


def test_strict_view_holds_only_system_files(as_user: Caller) -> None:
    plan = viewbox.Sandbox(policy="strict").compile(["true"])
    assert plan.base is Base.EMPTY
    done = as_user.run(["--policy", "strict", "--", "sh", "-c", "ls -A /; echo --; ls -A /etc"])
    assert done.returncode == 0, done.stderr
    top, etc = done.stdout.split("--\n")
    assert set(top.split()) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "tmp",
                                "proc", "dev"}, top
    assert {"usr", "bin", "etc", "tmp", "proc", "dev"} <= set(top.split())
    assert set(etc.split()) <= {"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
                                "nsswitch.conf"}, etc
