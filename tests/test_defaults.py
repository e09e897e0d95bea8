"""Safe defaults and one validation path (issue 13): {cwd} never widens the view to /, a system
tree or a whole home; hidden stays hidden inside a wider bind; a policy file without extends
starts from "default"; `check` finds in one pass what `run` refuses; sizes and counts are
range-checked; `/` cannot be hidden or covered by a tmpfs.

Run through the real CLI as root and as user nobody (conftest.as_user) where a run is involved.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import textwrap
import uuid
from collections.abc import Iterator

import pytest

from conftest import HOST_ENV, NOBODY, Caller, make_world_dir
from viewbox.errors import PolicyErrors
from viewbox.plan import MountKind
from viewbox.policy import check_policy_file, compile_policy, load_policy, shipped_path

COMMON_FIELD_ERROR = "[fs].rw[0]"


def write(directory: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    path.chmod(0o644)
    return path


def compile_at(policy_ref: str | pathlib.Path, cwd: str, **overrides: object) -> object:
    return compile_policy(load_policy(policy_ref, overrides=overrides or None), argv=("true",), cwd=cwd,
                          host_env={"HOME": "/nonexistent"}, landlock_abi=7, caller_uid=NOBODY,
                          caller_gid=NOBODY)


@pytest.fixture
def home_dir() -> Iterator[pathlib.Path]:
    """A new home directory, /home/NAME, owned by user nobody."""
    os.makedirs("/home", exist_ok=True)
    path = pathlib.Path("/home") / f"vbtest-{uuid.uuid4().hex[:12]}"
    path.mkdir(mode=0o755)
    os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- {cwd} never widens the view to /, a system tree or a whole home ----------------------

def test_daemon_started_in_root_cannot_write_usr(as_user: Caller) -> None:
    victim = pathlib.Path("/usr") / f"vbtest-{uuid.uuid4().hex[:12]}"
    done = as_user.run(["--policy", "daemon", "--", "touch", str(victim)], cwd="/")
    assert done.returncode == 125, done.stderr
    assert not victim.exists()
    assert done.stdout == ""
    # one line: the field, the directory, and how to name a narrower one
    [line] = done.stderr.splitlines()
    assert "daemon.toml:" in line and "[fs].rw[0]" in line
    assert '"{cwd}" is "/", the whole filesystem' in line
    assert "--rw DIR" in line


def test_python_started_in_a_home_cannot_reach_it(as_user: Caller, home_dir: pathlib.Path) -> None:
    ssh = home_dir / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "id_ed25519").write_text("PRIVATE KEY\n")
    os.chown(ssh, NOBODY, NOBODY)
    os.chown(ssh / "id_ed25519", NOBODY, NOBODY)
    marker = home_dir / "written"
    done = as_user.run(["--policy", "python", "--", "sh", "-c", f"cat .ssh/id_ed25519; touch {marker}"],
                       cwd=str(home_dir))
    assert done.returncode == 125, done.stderr
    assert "PRIVATE KEY" not in done.stdout
    assert not marker.exists()
    [line] = done.stderr.splitlines()
    assert f'"{{cwd}}" is "{home_dir}", a home directory' in line and "[fs].rw[0]" in line


def test_root_started_in_its_home_is_refused() -> None:
    victim = pathlib.Path("/root") / f"vbtest-{uuid.uuid4().hex[:12]}"
    done = Caller("root").run(["--policy", "python", "--", "touch", str(victim)], cwd="/root")
    assert done.returncode == 125, done.stderr
    assert '"{cwd}" is "/root", a home directory' in done.stderr
    assert not victim.exists()


def test_the_callers_home_counts_wherever_it_is(as_user: Caller) -> None:
    home = make_world_dir(0o777)
    try:
        env = dict(HOST_ENV, HOME=str(home))
        marker = home / "written"
        done = as_user.run(["--policy", "python", "--", "touch", str(marker)], cwd=str(home), env=env)
        assert done.returncode == 125, done.stderr
        assert f'is "{home}", a home directory' in done.stderr
        assert not marker.exists()
        # a directory inside the home is a project: it is shown, and writable
        project = home / "project"
        project.mkdir()
        project.chmod(0o777)
        done = as_user.run(["--policy", "python", "--", "touch", "written"], cwd=str(project), env=env)
        assert done.returncode == 0, done.stderr
        assert (project / "written").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize(("cwd", "what"), [
    ("/usr/lib", "in the system tree /usr"),
    ("/etc", "a system tree"),
    ("/var", "a system tree"),
    ("/home", "the directory of the home directories"),
])
def test_system_trees_are_refused(cwd: str, what: str) -> None:
    with pytest.raises(PolicyErrors) as excinfo:
        compile_at("daemon", cwd)
    assert f'"{{cwd}}" is "{cwd}", {what}' in str(excinfo.value)


def test_cwd_climbing_out_of_a_project_is_caught(tmp_path: pathlib.Path, home_dir: pathlib.Path) -> None:
    project = home_dir / "project"
    project.mkdir()
    policy = write(tmp_path, "up.toml", """
        [fs]
        ro = ["{cwd}/.."]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        compile_at(policy, str(project))
    assert f'[fs].ro[0]: "{{cwd}}/.." is "{home_dir}", a home directory' in str(excinfo.value)
    assert "--ro DIR" in str(excinfo.value)


def test_a_project_in_a_home_is_shown(home_dir: pathlib.Path) -> None:
    project = home_dir / "project"
    project.mkdir()
    plan = compile_at("python", str(project))
    assert any(op.kind is MountKind.BIND and op.target == str(project) for op in plan.mounts)  # type: ignore[attr-defined]


def test_hide_or_tmpfs_of_cwd_started_in_root_is_refused(tmp_path: pathlib.Path) -> None:
    policy = write(tmp_path, "cover.toml", """
        [viewbox]
        extends = []
        [fs]
        hide = ["{cwd}"]
        tmpfs = ["{cwd}/."]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        compile_at(policy, "/")
    assert [error.field for error in excinfo.value.errors] == ["[fs].hide[0]", "[fs].tmpfs[0]"]


# --- hidden stays hidden inside a wider bind ------------------------------------------------

@pytest.fixture
def secrets() -> Iterator[pathlib.Path]:
    """D/a/b/c/secret and D/a/b/secret2, and symlinks to them: D/l -> D/a/b/c, D/lb -> D/a/b,
    D/lf -> D/a/b/c/secret; readable by everyone."""
    base = make_world_dir(0o755)
    (base / "a/b/c").mkdir(parents=True)
    (base / "a/b/c/secret").write_text("S1\n")
    (base / "a/b/secret2").write_text("S2\n")
    (base / "a/b/public").write_text("P\n")
    (base / "a/x").write_text("X\n")
    (base / "l").symlink_to(base / "a/b/c")
    (base / "lb").symlink_to(base / "a/b")
    (base / "lf").symlink_to(base / "a/b/c/secret")
    for path in base.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def cat(as_user: Caller, args: list[str], *paths: pathlib.Path, cwd: str = "/") -> str:
    done = as_user.run([*args, "--", "sh", "-c", 'for f; do cat "$f" 2>/dev/null; done; exit 0', "sh", *map(str, paths)],
                       cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_hide_named_through_a_symlink_holds_inside_a_deeper_bind(as_user: Caller, secrets: pathlib.Path) -> None:
    # The hide's path is shallower than the bind's (l/secret vs a/b/c): by path depth alone the bind
    # came last and covered the hide.
    shown = cat(as_user, ["--hide", f"{secrets}/l/secret", "--rw", f"{secrets}/a/b/c"],
                secrets / "a/b/c/secret", secrets / "l/secret")
    assert "S1" not in shown


def test_a_hidden_symlink_hides_its_target_inside_a_bind(as_user: Caller, secrets: pathlib.Path) -> None:
    shown = cat(as_user, ["--hide", f"{secrets}/lf", "--ro", f"{secrets}/a/b/c"], secrets / "a/b/c/secret")
    assert "S1" not in shown


def test_a_bind_of_a_symlink_to_an_ancestor_keeps_the_hide(as_user: Caller, secrets: pathlib.Path) -> None:
    # lb -> a/b: the bind shows a/b at lb, where a hide of a/b/secret2 as written never lands
    shown = cat(as_user, ["--hide", f"{secrets}/a/b/secret2", "--ro", f"{secrets}/lb"],
                secrets / "lb/secret2", secrets / "lb/public")
    assert shown == "P\n"


def test_a_bind_under_another_name_keeps_what_an_extended_policy_hides(as_user: Caller,
                                                                       secrets: pathlib.Path) -> None:
    parent = write(secrets, "parent.toml", f"""
        [viewbox]
        extends = ["strict"]
        [fs]
        hide = ["{secrets}/a/b/secret2"]
    """)
    child = write(secrets, "child.toml", f"""
        [viewbox]
        extends = ["parent.toml"]
        [fs]
        ro = ["{secrets}/lb"]
    """)
    shown = cat(as_user, ["--policy", str(child)], secrets / "lb/secret2", secrets / "lb/public")
    assert shown == "P\n"
    # a flag binding an ancestor later hides nothing less either
    shown = cat(as_user, ["--policy", str(parent), "--ro", str(secrets)],
                secrets / "a/b/secret2", secrets / "lb/secret2", secrets / "a/b/public")
    assert shown == "P\n"


def test_a_rule_naming_the_hidden_path_shows_it(as_user: Caller, secrets: pathlib.Path) -> None:
    # named explicitly, under another name: the bind shows it
    shown = cat(as_user, ["--hide", f"{secrets}/a/b/secret2", "--ro", f"{secrets}/lb/secret2"],
                secrets / "lb/secret2")
    assert shown == "S2\n"


def test_cwd_under_a_hidden_directory_shows_itself_only(as_user: Caller, secrets: pathlib.Path) -> None:
    policy = write(secrets, "project.toml", f"""
        [viewbox]
        extends = ["python"]
        [fs]
        hide = ["{secrets}/a", "{secrets}/a/b/secret2"]
    """)
    shown = cat(as_user, ["--policy", str(policy), "--ro", str(secrets)],
                secrets / "a/x", secrets / "a/b/secret2", secrets / "a/b/public", cwd=str(secrets / "a/b"))
    assert shown == "P\n"


# --- a policy file without extends starts from "default" -------------------------------------

def test_a_file_without_extends_hides_what_default_hides(as_user: Caller, home_dir: pathlib.Path) -> None:
    scratch = make_world_dir(0o755)
    try:
        (scratch / "host-tmp-file").write_text("HOST TMP\n")
        (scratch / "host-tmp-file").chmod(0o644)
        (home_dir / "in-home").write_text("HOME FILE\n")
        (home_dir / "in-home").chmod(0o644)
        bare = write(scratch, "bare.toml", """
            [identity]
            hostname = "bare"
        """)
        opted_out = write(scratch, "opted-out.toml", """
            [viewbox]
            extends = []
            [identity]
            hostname = "bare"
        """)
        paths = [scratch / "host-tmp-file", home_dir / "in-home"]
        assert cat(as_user, ["--policy", str(bare)], *paths) == ""
        assert cat(as_user, ["--policy", str(opted_out)], *paths) == "HOST TMP\nHOME FILE\n"
        policy = load_policy(bare)
        assert "/etc/shadow" in policy.fs.hide and "/root" in policy.fs.hide
        assert policy.implicit == (str(bare),)
        # show and check say so
        show = as_user.cli(["show", "--policy", str(bare)])
        assert f'# {bare} names no [viewbox].extends, so it extends "default"' in show.stdout
        check = as_user.cli(["check", str(bare), str(opted_out)])
        assert check.stdout.splitlines() == [
            f'{bare}: ok (it names no [viewbox].extends, so it extends "default")', f"{opted_out}: ok"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_shipped_policies_extend_nothing_implicitly() -> None:
    for name in ("default", "strict"):
        policy = load_policy(name)
        assert policy.sources == (str(shipped_path(name)),) and policy.implicit == ()
    assert load_policy("strict").fs.hide == ()


# --- check finds what run refuses, all at once -------------------------------------------------

BAD = """
    [viewbox]
    extends = ["default"]
    [fs]
    hide = ["/proc"]
    ro = ["/nonexistent-{unique}"]
    tmpfs = ["/scratch:64"]
    [net]
    mode = "host"
    publish = ["8080:80"]
    [time]
    start = "2009-04-21T12:00:00Z"
    offset = "-1d"
"""


def test_check_reports_every_mistake_run_would_refuse_in_one_pass(tmp_path: pathlib.Path) -> None:
    unique = uuid.uuid4().hex
    policy = write(tmp_path, "bad.toml", BAD.replace("{unique}", unique))
    done = Caller("root").cli(["check", str(policy)])
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f'{policy}:6: [fs].tmpfs[0]: size "64" has no unit: write "64M" for megabytes (units B, K, M, G, T)',
        f"{policy}:4: [fs].hide[0]: /proc is the sandbox's own (with proc = true); "
        "set proc = false to put something else there",
        f'{policy}:9: [net].publish[0]: publish needs the sandbox\'s own network (mode "none" or "private"): '
        'with mode "host" the daemon binds the host\'s ports itself',
        f"{policy}:12: [time].offset: cannot be combined with [time].start (set at {policy}:11): "
        "start places the clock at an instant, offset shifts the host's",
        f"{policy}:5: [fs].ro[0]: /nonexistent-{unique}: no such file or directory",
    ]
    # run refuses the same policy with the same errors (it never gets to look for the bind source)
    run = Caller("root").run(["--policy", str(policy), "--", "true"])
    assert run.returncode == 125
    assert run.stderr.splitlines() == [f"viewbox: {line}" for line in done.stderr.splitlines()[:4]]


@pytest.mark.parametrize("body", [
    '[fs]\nhide = ["/proc"]',
    '[fs]\ntmpfs = ["/dev"]',
    '[net]\nmode = "host"\npublish = ["8080:80"]',
    '[net]\nmode = "host"\nallow = ["10.0.0.1:80"]',
    '[net]\nlisten = ["tcp:8080", "tcp:127.0.0.1:8080"]',
    '[fs]\nproc = false\ndeny = ["/etc/**"]',
])
def test_check_refuses_what_run_refuses(tmp_path: pathlib.Path, body: str) -> None:
    policy = write(tmp_path, "p.toml", body)
    with pytest.raises(PolicyErrors):
        check_policy_file(policy)


# --- sizes and counts ---------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "message"), [
    (["--memory", "256"], '--memory: size "256" has no unit: write "256M" for megabytes'),
    (["--memory", "16777216T"], "--memory: size must be from 4M to 1024T, got 16777216T"),
    (["--memory", "1K"], "--memory: size must be from 4M to 1024T, got 1K"),
    (["--disk", "0K"], "--disk: size must be from 4K to 1024T, got 0"),
    (["--tmpfs", "/scratch:100"], '--tmpfs: size "100" has no unit'),
    (["--hide", "/"], '--hide: cannot hide "/"'),
    (["--tmpfs", "/"], '--tmpfs: cannot put a tmpfs on "/"'),
    (["--hide", "/home/*/.ssh"], '--hide: hide takes concrete paths, got the pattern "/home/*/.ssh"'),
])
def test_bad_flags_are_refused_before_anything_runs(as_user: Caller, shared_dir: pathlib.Path,
                                                    flags: list[str], message: str) -> None:
    marker = shared_dir / "ran"
    done = as_user.run([*flags, "--rw", str(shared_dir), "--", "touch", str(marker)])
    assert done.returncode == 125, done.stderr
    assert done.stderr.startswith(f"viewbox: {message}")
    assert len(done.stderr.splitlines()) == 1
    assert not marker.exists()


def test_every_size_and_count_of_a_file_is_range_checked(tmp_path: pathlib.Path) -> None:
    policy = write(tmp_path, "p.toml", f"""
        [fs]
        tmpfs = [{{ path = "/a", size = 100 }}, "/b:{2**64}B"]
        hide = ["/"]
        [limits]
        memory = {2**64}
        disk = "2048T"
        files = {2**21}
        pids = 1
        wall = 0.0001
        cpu = 0
        [identity]
        uid = -1
        gid = {2**32}
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        check_policy_file(policy)
    by_field = {error.field: error.message for error in excinfo.value.errors}
    assert by_field == {
        "[fs].tmpfs[0]": "size must be from 4K to 1024T, got 100B",
        "[fs].tmpfs[1]": "size must be from 4K to 1024T, got 16777216T",
        "[fs].hide[0]": by_field["[fs].hide[0]"],
        "[limits].memory": "size must be from 4M to 1024T, got 16777216T",
        "[limits].disk": "size must be from 4K to 1024T, got 2048T",
        "[limits].files": f"must be at most {2**20}, got {2**21}",
        "[limits].pids": "must be at least 2, got 1",
        "[limits].wall": "duration must be from 1ms to 2147483647s, got 0.0001",
        "[limits].cpu": "must be between 0.01 and 4096 cores, got 0",
        "[identity].uid": "must be at least 0, got -1",
        "[identity].gid": f"must be at most {2**32 - 2}, got {2**32}",
    }
    assert by_field["[fs].hide[0]"].startswith('cannot hide "/"')


def test_sizes_render_back_to_what_they_read(tmp_path: pathlib.Path) -> None:
    policy = write(tmp_path, "p.toml", """
        [fs]
        tmpfs = [{ path = "/a", size = 5000 }, "/b:3T"]
        [limits]
        memory = "4M"
    """)
    loaded = load_policy(policy)
    assert [mount.size for mount in loaded.fs.tmpfs if mount.path in ("/a", "/b")] == [5000, 3 * 2**40]
    from viewbox.policy import render_policy

    again = write(tmp_path, "again.toml", render_policy(loaded))
    assert load_policy(again) == loaded


def test_an_extended_file_without_extends_starts_from_default(tmp_path: pathlib.Path) -> None:
    base = write(tmp_path, "base.toml", '[identity]\nhostname = "from-base"\n')
    app = write(tmp_path, "app.toml", '[viewbox]\nextends = ["base.toml"]\n')
    policy = load_policy(app)
    assert policy.implicit == (str(base),)
    assert policy.identity.hostname == "from-base"
    assert {"/root", "/home", "/etc/shadow"} <= set(policy.fs.hide)
    assert "/tmp" in {mount.path for mount in policy.fs.tmpfs}


def test_a_learned_policy_stands_alone(shared_dir: pathlib.Path) -> None:
    out = shared_dir / "learned.toml"
    done = Caller("root").cli(["learn", "-o", str(out), "--", "true"])
    assert done.returncode == 0, done.stderr
    learned = load_policy(out)
    assert learned.implicit == () and learned.sources == (str(out),)
    assert "/root" not in learned.fs.hide  # an empty root: nothing of default's to hide


def test_learn_net_refuses_a_base_sharing_the_host_network(shared_dir: pathlib.Path) -> None:
    base = write(shared_dir, "base.toml", '[viewbox]\nextends = ["default"]\n[net]\nmode = "host"\n')
    done = Caller("root").cli(["learn", "-o", str(shared_dir / "out.toml"), "--policy", str(base), "--learn-net",
                               "--", "true"])
    assert done.returncode == 125
    assert done.stderr.splitlines() == [
        "viewbox: --learn-net learns [net].allow, which needs mode \"none\"; the base policy's [net].mode is another"]
    assert not (shared_dir / "out.toml").exists()
