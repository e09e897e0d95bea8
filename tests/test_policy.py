"""Policy layer: loading (errors with file:line), merging, overrides, rendering, compiling to a Plan.

Pure Python: needs neither the C core nor a kernel feature.
"""
from __future__ import annotations

import os
import re
import resource
import textwrap
from pathlib import Path

import pytest

from viewbox import cli
from viewbox.errors import PolicyError, PolicyErrors, UnavailableLayer, ViewboxError
from viewbox.plan import Access, Base, MountKind, MountOp, PathRule, Plan, RuleAction
from viewbox.policy import (
    SHIPPED, GlobRule, Policy, TmpfsMount, check_policy_file, compile_policy, load_policy, render_policy,
    shipped_path,
)
from viewbox.policy.model import SCHEMA
from viewbox.views import fs as fs_view
from viewbox.views.limits import ALL_GROUPS, SYSCALL_GROUPS

REPO = Path(__file__).resolve().parent.parent
LANDLOCK_EXECUTE = 1 << 0
LANDLOCK_READ_DIR = 1 << 3
LANDLOCK_MAKE_REG = 1 << 8


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def messages(excinfo: pytest.ExceptionInfo[PolicyErrors]) -> list[str]:
    return [str(error) for error in excinfo.value.errors]


def compile_(policy: Policy, *, cwd: str = "/", host_env: dict[str, str] | None = None,
             landlock_abi: int = 7, argv: tuple[str, ...] = ("true",)) -> Plan:
    return compile_policy(policy, argv=argv, cwd=cwd, host_env=host_env or {},
                          landlock_abi=landlock_abi, caller_uid=1000, caller_gid=1000)


def mount_at(plan: Plan, target: str) -> MountOp:
    [op] = [op for op in plan.mounts if op.target == target]
    return op


def rights_at(plan: Plan, path: str) -> int:
    [rule] = [rule for rule in plan.landlock_rules if rule.path == path]
    return rule.access


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs the test in tmp_path, so messages name files as "policy.toml"."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- mistakes: each names FILE:LINE: field ------------------------------------

def test_bad_toml_names_file_and_line(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [viewbox]
        version = 1

        [fs]
        base = host
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("policy.toml")
    assert messages(excinfo) == ["policy.toml:5: Invalid value"]


def test_unknown_field_suggests_the_close_one(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [viewbox]
        version = 1
        [fs]
        rox = ["/usr"]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("policy.toml")
    assert messages(excinfo) == ['policy.toml:4: [fs].rox: unknown field (did you mean "ro"?)']


def test_relative_path_is_located_in_a_multiline_array(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [fs]
        ro = [
            "/usr",  # a comment, with ] and "quotes" and a, comma
            '/etc/ssl',

            # a whole-line comment
            "usr",
        ]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("policy.toml")
    assert messages(excinfo) == ['policy.toml:7: [fs].ro[2]: path must be absolute, got "usr"']


def test_unknown_extends_lists_the_shipped_policies(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        # my policy
        [viewbox]
        version = 1
        extends = ["nope"]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("policy.toml")
    assert messages(excinfo) == [
        'policy.toml:4: [viewbox].extends[0]: no shipped policy or file named "nope" '
        '(shipped: daemon, default, python, strict)'
    ]


def test_wrong_type_names_what_it_got(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [viewbox]
        version = 1

        [limits]

        files = "x"
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("policy.toml")
    assert messages(excinfo) == ['policy.toml:6: [limits].files: expected an integer, got string "x"']


def test_every_mistake_of_a_file_is_reported_at_once(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        version = 1
        [fsx]
        [fs]
        tmpfs = ["/tmp:64X", { path = "/run", size = "16M" }]
        [identity]
        hostname = "no spaces"
        [net]
        mode = "bridge"
        [env]
        set = { OK = "1", "BAD NAME" = "x" }
        [seccomp]
        allow = ["ptrce"]
        [viewbox]
        accept_degraded = ["seccomp"]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        check_policy_file("policy.toml")
    assert messages(excinfo) == [
        "policy.toml:1: version: unknown top-level key (did you mean [viewbox].version?)",
        'policy.toml:2: [fsx]: unknown table (did you mean "fs"?)',
        'policy.toml:4: [fs].tmpfs[0]: invalid size "64X" (a number with B, K, M, G or T, e.g. "256M"; or an integer of bytes)',
        'policy.toml:6: [identity].hostname: invalid hostname "no spaces" (1 to 64 letters, digits, "." or "-")',
        'policy.toml:8: [net].mode: expected "none" or "private" or "host", got "bridge"',
        'policy.toml:10: [env].set."BAD NAME": invalid variable name "BAD NAME" '
        "(letters, digits and _, not starting with a digit)",
        'policy.toml:12: [seccomp].allow[0]: unknown syscall group "ptrce" (did you mean "ptrace"?)',
        'policy.toml:14: [viewbox].accept_degraded[0]: unknown layer "seccomp" '
        '(only "landlock" may be accepted as degraded)',
    ]


def test_placeholders_must_be_known(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [fs]
        rw = ["{cwd}/build", "{home}/x"]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("policy.toml")
    assert messages(excinfo) == [
        'policy.toml:2: [fs].rw[1]: unknown placeholder {home} in "{home}/x" (known: {cwd})'
    ]


def test_missing_file_is_named(in_tmp: Path) -> None:
    with pytest.raises(PolicyError, match=r"^nothere\.toml: cannot read: no such file or directory$"):
        load_policy("nothere.toml")
    with pytest.raises(PolicyError, match=r'^no shipped policy or file named "nothere"'):
        load_policy("nothere")


# --- extends and merging -------------------------------------------------------

def test_extends_chain_merges_in_order(in_tmp: Path) -> None:
    write(in_tmp, "base.toml", """
        [fs]
        ro = ["/usr", "/etc"]
        tmpfs = ["/tmp:64M"]
        [env]
        set = { A = "base", B = "base" }
        [limits]
        files = 100
        [viewbox]
        extends = []
    """)
    write(in_tmp, "mid.toml", """
        [viewbox]
        extends = ["base.toml"]
        [fs]
        ro = ["/etc", "/opt"]
        [limits]
        files = 200
    """)
    write(in_tmp, "top.toml", """
        [viewbox]
        extends = ["mid.toml"]
        [fs]
        tmpfs = ["/tmp:1G"]
        [env]
        set.B = "top"
    """)
    policy = load_policy("top.toml")
    assert policy.fs.ro == ("/usr", "/etc", "/opt")          # appended, first occurrence kept
    assert str(policy.origin("fs.ro", 1)) == "base.toml:2"
    assert str(policy.origin("fs.ro", 2)) == "mid.toml:4"
    assert policy.fs.tmpfs == (TmpfsMount("/tmp", 2**30),)   # one tmpfs per path, the later size wins
    assert policy.limits.files == 200
    assert str(policy.origin("limits.files")) == "mid.toml:6"
    assert dict(policy.env.set) == {"A": "base", "B": "top"}  # tables merge key by key
    assert str(policy.origin("env.set", "B")) == "top.toml:6"
    assert policy.sources == ("base.toml", "mid.toml", "top.toml")


def test_extends_paths_are_relative_to_the_extending_file(in_tmp: Path) -> None:
    write(in_tmp, "conf/base.toml", """
        [identity]
        hostname = "from-base"
        [viewbox]
        extends = []
    """)
    write(in_tmp, "conf/app.toml", """
        [viewbox]
        extends = ["./base.toml", "default"]
    """)
    policy = load_policy("conf/app.toml")
    assert policy.identity.hostname == "viewbox"  # default is applied after base
    assert "/home" in policy.fs.hide
    assert policy.sources[0] == "conf/base.toml"


def test_extends_cycle_names_the_chain(in_tmp: Path) -> None:
    write(in_tmp, "a.toml", """
        [viewbox]
        extends = ["b.toml"]
    """)
    write(in_tmp, "b.toml", """
        [viewbox]
        version = 1
        extends = ["a.toml"]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("a.toml")
    assert messages(excinfo) == ["b.toml:3: [viewbox].extends[0]: extends cycle: a.toml -> b.toml -> a.toml"]


def test_mistakes_in_an_extended_file_name_that_file(in_tmp: Path) -> None:
    write(in_tmp, "base.toml", """
        [fs]
        hide = ["etc"]
    """)
    write(in_tmp, "policy.toml", """
        [viewbox]
        extends = ["base.toml", "missing.toml"]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("policy.toml")
    assert messages(excinfo) == [
        'base.toml:2: [fs].hide[0]: path must be absolute, got "etc"',
        'policy.toml:2: [viewbox].extends[1]: cannot read "missing.toml": no such file or directory',
    ]


# --- overrides -------------------------------------------------------------------

def test_overrides_win_and_carry_their_origin(in_tmp: Path) -> None:
    policy = load_policy("default", override_origin="cli", overrides={
        "rw": [str(in_tmp)], "hostname": "box", "net": "host", "env": {"X": "1"}, "uid": 0, "gid": None,
    })
    assert policy.fs.rw == (str(in_tmp),)
    assert str(policy.origin("fs.rw", 0)) == "--rw"
    assert policy.identity.hostname == "box"
    assert str(policy.origin("identity.hostname")) == "--hostname"
    assert policy.net.mode == "host"
    assert policy.identity.uid == 0 and policy.identity.gid is None
    assert dict(policy.env.set) == {"X": "1"}
    assert str(policy.origin("fs.hide", 0)).endswith("default.toml:18")

    api = load_policy("default", overrides={"tmpfs": ["/scratch:1M"]})
    assert api.fs.tmpfs[-1] == TmpfsMount("/scratch", 2**20)
    assert str(api.origin("fs.tmpfs", len(api.fs.tmpfs) - 1)) == "api: tmpfs"


def test_bad_override_is_named_by_its_flag() -> None:
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("default", overrides={"ro": ["usr"], "uid": "root"}, override_origin="cli")
    assert messages(excinfo) == [
        '--ro: path must be absolute, got "usr"',
        '--uid: expected an integer, got string "root"',
    ]
    with pytest.raises(PolicyErrors, match=r'^api: net: expected "none" or "private" or "host", got "hots" '
                                           r'\(did you mean "host"\?\)$'):
        load_policy("default", overrides={"net": "hots"})


def test_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="rox"):
        load_policy("default", overrides={"rox": ["/usr"]})


# --- rendering ---------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_render_round_trips_shipped_policies(name: str, tmp_path: Path) -> None:
    policy = load_policy(name)
    rendered = tmp_path / "rendered.toml"
    rendered.write_text(render_policy(policy))
    assert check_policy_file(rendered) == policy


def test_render_round_trips_every_kind_of_value(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [viewbox]
        description = "quotes \\" and \\\\ and ünïcode"
        extends = ["strict"]
        accept_degraded = ["landlock"]
        [fs]
        tmpfs = [{ path = "/odd:name", size = 12345 }]
        [identity]
        uid = 0
        [env]
        pass = ["SSH_AUTH_SOCK"]
        set = { EDITOR = "vi", "EMPTY" = "" }
        [seccomp]
        allow = ["ptrace"]
    """)
    policy = load_policy("policy.toml", overrides={"net": "host"}, override_origin="cli")
    text = render_policy(policy)
    assert "# UNSAFE: shares the host network\nmode = \"host\"  # from --net" in text
    assert 'uid = 0  # from policy.toml:8' in text
    (in_tmp / "again.toml").write_text(text)
    assert load_policy("again.toml") == policy


# --- compiling -----------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_policy_compiles_to_a_sane_plan(name: str) -> None:
    plan = compile_(load_policy(name), cwd=str(REPO))
    assert plan.argv == ("true",)
    assert plan.unshare_net
    assert all(op.target.startswith("/") for op in plan.mounts)
    assert mount_at(plan, "/proc").kind is MountKind.PROC
    assert mount_at(plan, "/tmp").kind is MountKind.TMPFS
    assert all(op.source and os.path.exists(op.source) for op in plan.mounts if op.kind is MountKind.BIND)
    assert plan.path_rules == ()  # a rule makes every path call a round trip: none unless asked for
    assert plan.seccomp_deny_groups == ALL_GROUPS
    assert plan.landlock_rules and plan.landlock_rules[0].path == "/"


def test_default_policy_hides_homes_and_secrets() -> None:
    plan = compile_(load_policy("default"), cwd="/home/someone/project")
    assert plan.base is Base.HOST
    for hidden in ("/home", "/root", "/etc/shadow", "/etc/sudoers"):
        assert mount_at(plan, hidden) == MountOp(MountKind.HIDE, hidden, optional=True)
    for scratch in ("/tmp", "/var/tmp", "/run"):
        assert mount_at(plan, scratch).options == f"size={256 * 2**20},mode=1777"
    assert plan.workdir == "/"  # the caller's directory is under hidden /home
    assert plan.hostname == "viewbox"
    assert (plan.uid, plan.gid) == (1000, 1000)


def test_strict_policy_shows_only_system_files() -> None:
    plan = compile_(load_policy("strict"), cwd=str(REPO))
    assert plan.base is Base.EMPTY
    binds = {op.target: op for op in plan.mounts if op.kind is MountKind.BIND}
    assert "/usr" in binds and "/etc/passwd" in binds and "/home" not in binds
    assert all(op.readonly for op in binds.values())
    assert plan.workdir == "/"
    assert rights_at(plan, "/") == LANDLOCK_READ_DIR


def test_environment_starts_clean() -> None:
    host_env = {"AWS_SECRET_ACCESS_KEY": "hunter2", "GITHUB_TOKEN": "ghp_x", "TERM": "xterm-256color",
                "PATH": "/home/me/bin:/usr/bin", "LANG": "de_DE.UTF-8"}
    plan = compile_(load_policy("default"), host_env=host_env)
    assert plan.env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "de_DE.UTF-8",
        "TERM": "xterm-256color",
        "HOME": "/tmp",
    }
    bare = compile_(load_policy("default"), host_env={})
    assert bare.env["LANG"] == "C.UTF-8" and "TERM" not in bare.env


def test_environment_passes_named_variables_and_sets_values(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [viewbox]
        extends = ["default"]
        [identity]
        home = "{cwd}"
        [env]
        pass = ["SSH_AUTH_SOCK", "NOT_ON_HOST"]
        set = { EDITOR = "vi", LANG = "C" }
    """)
    plan = compile_(load_policy("policy.toml"), cwd="/srv/app",
                    host_env={"SSH_AUTH_SOCK": "/run/agent", "AWS_SECRET_ACCESS_KEY": "x"})
    assert plan.env["SSH_AUTH_SOCK"] == "/run/agent"
    assert plan.env["EDITOR"] == "vi" and plan.env["LANG"] == "C"
    assert plan.env["HOME"] == "/srv/app"
    assert "NOT_ON_HOST" not in plan.env and "AWS_SECRET_ACCESS_KEY" not in plan.env


def test_mounts_are_ordered_parents_first(tmp_path: Path) -> None:
    (tmp_path / "home/u/proj").mkdir(parents=True)
    (tmp_path / "work/.git").mkdir(parents=True)
    policy = load_policy("default", overrides={
        "rw": [f"{tmp_path}/home/u/proj", f"{tmp_path}/work"],
        "ro": [f"{tmp_path}/work/.git"],
        "hide": [f"{tmp_path}/home"],
    })
    order = [op.target for op in compile_(policy).mounts]
    assert order.index(f"{tmp_path}/home") < order.index(f"{tmp_path}/home/u/proj")
    assert order.index(f"{tmp_path}/work") < order.index(f"{tmp_path}/work/.git")
    assert order.index("/proc") < order.index(f"{tmp_path}/home")
    depths = [len(Path(target).parts) for target in order]
    assert depths == sorted(depths)


def test_missing_bind_source_names_its_origin(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [fs]
        ro = [
            "/usr",
            "/nope",
        ]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        compile_(load_policy("policy.toml"))
    assert messages(excinfo) == ["policy.toml:4: [fs].ro[1]: /nope: no such file or directory"]

    flagged = load_policy("default", overrides={"rw": ["/nope/either"]}, override_origin="cli")
    with pytest.raises(PolicyErrors) as excinfo:
        compile_(flagged)
    assert messages(excinfo) == ["--rw: /nope/either: no such file or directory"]


def test_the_same_path_in_two_lists_gets_the_most_access() -> None:
    plan = compile_(load_policy("default", overrides={"rw": ["/tmp"], "ro": ["/root"]}))
    assert mount_at(plan, "/tmp") == MountOp(MountKind.BIND, "/tmp", source="/tmp")
    assert mount_at(plan, "/root").kind is MountKind.BIND and mount_at(plan, "/root").readonly


def test_own_proc_and_dev_cannot_be_replaced() -> None:
    with pytest.raises(PolicyErrors, match=r"^api: ro: /proc is the sandbox's own \(with proc = true\)"):
        compile_(load_policy("default", overrides={"ro": ["/proc"]}))


def test_symlinked_bind_shows_its_target_at_the_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    plan = compile_(load_policy("strict", overrides={"ro": [f"{tmp_path}/link"]}))
    op = mount_at(plan, f"{tmp_path}/link")
    assert op.source == str((tmp_path / "real").resolve())
    assert op.readonly


def test_workdir_default_is_the_callers_directory_only_when_visible(tmp_path: Path) -> None:
    assert compile_(load_policy("default"), cwd="/usr/share").workdir == "/usr/share"
    assert compile_(load_policy("default"), cwd="/tmp/x").workdir == "/"      # fresh tmpfs there
    assert compile_(load_policy("strict"), cwd="/usr/share").workdir == "/"   # explicit workdir
    write(tmp_path, "empty.toml", """
        [fs]
        base = "empty"
        ro = ["/usr"]
    """)
    empty = load_policy(tmp_path / "empty.toml", overrides={"rw": [str(tmp_path)]})
    assert compile_(empty, cwd=str(tmp_path / "sub")).workdir == str(tmp_path / "sub")
    assert compile_(empty, cwd="/etc").workdir == "/"
    python = compile_(load_policy("python"), cwd=str(tmp_path))
    assert python.workdir == str(tmp_path)
    assert mount_at(python, str(tmp_path)) == MountOp(MountKind.BIND, str(tmp_path),
                                                      source=str(tmp_path.resolve()))


# --- layers ----------------------------------------------------------------------------

def test_missing_landlock_fails_closed_unless_accepted(in_tmp: Path) -> None:
    with pytest.raises(UnavailableLayer, match=r"^Landlock unavailable: the kernel reports no Landlock"):
        compile_(load_policy("default"), landlock_abi=0)

    write(in_tmp, "policy.toml", """
        [viewbox]
        extends = ["default"]
        accept_degraded = ["landlock"]
    """)
    plan = compile_(load_policy("policy.toml"), landlock_abi=0)
    assert plan.landlock_abi == 0 and plan.landlock_rules == ()
    assert plan.degraded == ("landlock: not supported by this kernel",)


def test_landlock_rights_follow_the_abi() -> None:
    old = compile_(load_policy("default"), landlock_abi=1)
    assert old.landlock_handled_fs == (1 << 13) - 1
    assert old.landlock_scopes == 0
    assert all(rule.access & ~old.landlock_handled_fs == 0 for rule in old.landlock_rules)

    new = compile_(load_policy("default"), landlock_abi=6)
    assert new.landlock_handled_fs == (1 << 16) - 1
    assert new.landlock_scopes == 3
    assert rights_at(new, "/") == fs_view.READ_EXECUTE
    assert rights_at(new, "/tmp") == new.landlock_handled_fs
    assert rights_at(new, "/dev") & fs_view.ACCESS_FS_IOCTL_DEV
    assert "/home" not in {rule.path for rule in new.landlock_rules}


def test_landlock_rule_on_a_file_has_only_file_rights() -> None:
    plan = compile_(load_policy("strict"))
    assert rights_at(plan, "/etc/passwd") == LANDLOCK_EXECUTE | fs_view.ACCESS_FS_READ_FILE
    assert rights_at(plan, "/usr") & LANDLOCK_READ_DIR
    writable = compile_(load_policy("strict", overrides={"rw": ["/etc/hostname"]}))
    assert not rights_at(writable, "/etc/hostname") & LANDLOCK_MAKE_REG


def test_syscall_groups_mirror_the_c_header() -> None:
    header = (REPO / "csrc/viewbox.h").read_text()
    defined = {name: int(value) for name, value in re.findall(r"#define VB_GROUP_(\w+)\s+(\d+)", header)}
    assert ALL_GROUPS == defined.pop("ALL")
    assert sorted(SYSCALL_GROUPS.values()) == sorted(defined.values())
    assert sum(SYSCALL_GROUPS.values()) == ALL_GROUPS


def test_seccomp_allow_lets_groups_through(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [seccomp]
        allow = ["ptrace", "perf"]
    """)
    plan = compile_(load_policy("policy.toml"))
    assert plan.seccomp_deny_groups == ALL_GROUPS & ~(SYSCALL_GROUPS["ptrace"] | SYSCALL_GROUPS["perf"])


def test_limits_become_rlimits() -> None:
    plan = compile_(load_policy("daemon"), cwd=str(REPO))
    limits = {rlimit.resource: (rlimit.soft, rlimit.hard) for rlimit in plan.rlimits}
    assert limits[resource.RLIMIT_NOFILE] == (4096, 4096)
    assert limits[resource.RLIMIT_CORE] == (0, 0)


def test_no_command_is_refused() -> None:
    with pytest.raises(ViewboxError, match="no command given"):
        compile_(load_policy("default"), argv=())


def test_shipped_policies_are_found_by_name() -> None:
    assert SHIPPED == ("daemon", "default", "python", "strict")
    assert shipped_path("default").read_text() == (REPO / "policies/default.toml").read_text()
    assert load_policy() == load_policy("default") == load_policy(shipped_path("default"))


def test_every_schema_field_is_documented() -> None:
    """policies/README.md has a `### key` entry under `## [table]` for exactly the schema's fields."""
    sections = re.split(r"^## ", (REPO / "policies/README.md").read_text(), flags=re.MULTILINE)
    documented = {
        (section.split("`")[1].strip("[]"), key)
        for section in sections if section.startswith("`[")
        for key in re.findall(r"^### `(\w+)`", section, re.MULTILINE)
    }
    assert documented == {(table, key) for table, specs in SCHEMA.items() for key in specs}


def test_optional_paths_are_skipped_where_absent(tmp_path: Path) -> None:
    policy_file = tmp_path / "p.toml"
    absent = str(tmp_path / "not-on-this-host")
    policy_file.write_text(f'[fs]\nro = ["/usr", "{absent}"]\noptional = ["{absent}"]\n')
    plan = compile_policy(load_policy(policy_file), argv=["true"], cwd="/", host_env={},
                          landlock_abi=7, caller_uid=0, caller_gid=0)
    targets = [op.target for op in plan.mounts]
    assert "/usr" in targets and absent not in targets
    # without `optional`, the same absent path is an error naming its place
    policy_file.write_text(f'[fs]\nro = ["/usr", "{absent}"]\n')
    with pytest.raises(PolicyErrors) as caught:
        compile_policy(load_policy(policy_file), argv=["true"], cwd="/", host_env={},
                       landlock_abi=7, caller_uid=0, caller_gid=0)
    assert f"p.toml:2: [fs].ro[1]: {absent}: no such file or directory" in str(caught.value)


# --- path rules: [fs].deny, ask, allow ----------------------------------------------------

ALL = Access.READ | Access.WRITE | Access.EXEC


def rules_of(policy: Policy) -> list[tuple[str, str]]:
    """The policy's path rules in the order they apply, each with where it was written."""
    return [(str(rule), str(policy.origin("fs.rules", index))) for index, rule in enumerate(policy.fs.rules)]


def test_rules_are_parsed_into_access_and_an_absolute_glob(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [fs]
        deny = ["**/*.pem", "read,write:/etc/**", "exec:/usr/bin/*", "/srv/a:b", "/srv//x/./y/", "{cwd}/k"]
        ask = ["read , exec:/opt/**/bin"]
        allow = ['write:/data/\\[1\\]']
    """)
    deny, ask, allow = RuleAction.DENY, RuleAction.ASK, RuleAction.ALLOW
    assert load_policy("policy.toml").fs.rules == (
        GlobRule(deny, ALL, "/**/*.pem"),                       # "**/" is "/**/"
        GlobRule(deny, Access.READ | Access.WRITE, "/etc/**"),
        GlobRule(deny, Access.EXEC, "/usr/bin/*"),
        GlobRule(deny, ALL, "/srv/a:b"),                        # a ":" after a "/" is the glob's
        GlobRule(deny, ALL, "/srv/x/y"),                        # normalised like paths
        GlobRule(deny, ALL, "{cwd}/k"),                         # placeholders filled in at compile
        GlobRule(ask, Access.READ | Access.EXEC, "/opt/**/bin"),
        GlobRule(allow, Access.WRITE, "/data/\\[1\\]"),
    )


def test_rule_mistakes_name_file_line_and_field(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [fs]
        deny = [
            "**/*.pem",
            5,
            "",
            "etc/passwd",
            "reed:/etc/passwd",
            "/x/a**b",
            "/x\\u0000y",
            "read:",
        ]
        ask = ["/x/[ab", "/x/y\\\\", "/{home}/x"]
        allow = ["**", "exe,read:/x"]
        rules = ["permit:/x", "deny"]
    """)
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("policy.toml")
    assert messages(excinfo) == [
        'policy.toml:4: [fs].deny[1]: expected a string "[ACCESS:]GLOB", got integer 5',
        'policy.toml:5: [fs].deny[2]: empty rule (expected "[ACCESS:]GLOB", e.g. "**/*.pem" or "write:/etc/**")',
        'policy.toml:6: [fs].deny[3]: glob must be absolute ("/...") or start with "**/", got "etc/passwd"',
        'policy.toml:7: [fs].deny[4]: unknown access "reed" in "reed:/etc/passwd" (did you mean "read"?)',
        'policy.toml:8: [fs].deny[5]: "**" must be a whole path component ("/a/**/b"), got "a**b" in "/x/a**b"',
        'policy.toml:9: [fs].deny[6]: rule contains a NUL byte: "/x\\u0000y"',
        'policy.toml:10: [fs].deny[7]: empty glob in "read:"',
        'policy.toml:12: [fs].ask[0]: unclosed "[" in "[ab" in "/x/[ab" (write "\\[" for a "[")',
        'policy.toml:12: [fs].ask[1]: "\\" escapes nothing at the end of "y\\\\" in "/x/y\\\\"',
        'policy.toml:12: [fs].ask[2]: unknown placeholder {home} in "/{home}/x" (known: {cwd})',
        'policy.toml:13: [fs].allow[0]: glob must be absolute ("/...") or start with "**/", got "**"',
        'policy.toml:13: [fs].allow[1]: unknown access "exe" in "exe,read:/x" (did you mean "exec"?)',
        'policy.toml:14: [fs].rules[0]: expected "ACTION:[ACCESS:]GLOB" with ACTION deny, ask or allow, '
        'got "permit:/x"',
        'policy.toml:14: [fs].rules[1]: expected "ACTION:[ACCESS:]GLOB" with ACTION deny, ask or allow, '
        'got "deny"',
    ]


def test_glob_syntax_accepts_what_the_c_matcher_reads(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [fs]
        deny = ["/**", "/a/**/b/**", "/x/[]a]", "/x/[!*]", "/x/\\\\*\\\\*", "/x/*.[ch]", "/x/?"]
    """)
    assert [rule.glob for rule in load_policy("policy.toml").fs.rules] == [
        "/**", "/a/**/b/**", "/x/[]a]", "/x/[!*]", "/x/\\*\\*", "/x/*.[ch]", "/x/?"]


def test_rules_apply_layer_by_layer_deny_ask_allow_within_each(in_tmp: Path) -> None:
    write(in_tmp, "base.toml", """
        [fs]
        allow = ["read:/srv/public/**"]
        deny = ["/srv/**"]
    """)
    write(in_tmp, "app.toml", """
        [viewbox]
        extends = ["base.toml"]
        [fs]
        allow = ["{cwd}/public.secret"]
        ask = ["exec:/usr/bin/curl"]
        deny = ["**/*.secret", "/srv/public/drafts/**"]
    """)
    policy = load_policy("app.toml", override_origin="cli", overrides={
        "allow": ["read:/srv/public/drafts/ok"], "deny": ["write:/etc/**"], "ask": ["/tmp/q"]})
    assert rules_of(policy) == [
        ("deny:/srv/**", "base.toml:3: [fs].deny[0]"),                  # each layer: deny first,
        ("allow:read:/srv/public/**", "base.toml:2: [fs].allow[0]"),    # allow last, as written anywhere
        ("deny:/**/*.secret", "app.toml:6: [fs].deny[0]"),              # then the file itself
        ("deny:/srv/public/drafts/**", "app.toml:6: [fs].deny[1]"),
        ("ask:exec:/usr/bin/curl", "app.toml:5: [fs].ask[0]"),
        ("allow:{cwd}/public.secret", "app.toml:4: [fs].allow[0]"),
        ("deny:write:/etc/**", "--deny"),                               # then the flags
        ("ask:/tmp/q", "--ask"),
        ("allow:read:/srv/public/drafts/ok", "--allow"),
    ]
    api = load_policy("app.toml", overrides={"deny": ["/x"], "allow": None})
    assert rules_of(api)[-1] == ("deny:/x", "api: deny")


def test_a_rule_given_again_moves_to_its_later_place(in_tmp: Path) -> None:
    write(in_tmp, "base.toml", """
        [fs]
        deny = ["**/*.pem"]
        allow = ["/srv/cert.pem"]
    """)
    write(in_tmp, "app.toml", """
        [viewbox]
        extends = ["base.toml"]
        [fs]
        deny = ["**/*.pem", "read:/x", "read:/x"]
    """)
    policy = load_policy("app.toml")
    # Keeping the first "deny **/*.pem" would let base's allow decide for /srv/cert.pem; app.toml said
    # it again after that allow, so the deny decides.
    assert rules_of(policy) == [
        ("allow:/srv/cert.pem", "base.toml:3: [fs].allow[0]"),
        ("deny:/**/*.pem", "app.toml:4: [fs].deny[0]"),
        ("deny:read:/x", "app.toml:4: [fs].deny[2]"),
    ]
    # The same rules in another order are another policy.
    swapped = load_policy("default", overrides={"deny": ["/a"], "allow": ["/a/b"]})
    write(in_tmp, "reordered.toml", """
        [viewbox]
        extends = ["default"]
        [fs]
        rules = ["allow:/a/b", "deny:/a"]
    """)
    assert load_policy("reordered.toml") != swapped
    write(in_tmp, "same.toml", """
        [viewbox]
        extends = ["default"]
        [fs]
        rules = ["deny:/a", "allow:/a/b"]
    """)
    assert load_policy("same.toml") == swapped


def test_rules_compile_to_the_plan_in_order_with_their_origins(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [viewbox]
        extends = ["default"]
        [fs]
        deny = ["**/*.secret"]
        allow = ["read:{cwd}/public.secret"]
    """)
    cli_policy = load_policy("policy.toml", overrides={"ask": ["exec:/usr/bin/curl"]}, override_origin="cli")
    # The caller's directory is matched as written, even when it holds glob characters.
    plan = compile_(cli_policy, cwd="/w/a[1]*?")
    assert plan.path_rules == (
        PathRule("/**/*.secret", ALL, RuleAction.DENY, "policy.toml:4: [fs].deny[0]"),
        PathRule("/w/a\\[1]\\*\\?/public.secret", Access.READ, RuleAction.ALLOW, "policy.toml:5: [fs].allow[0]"),
        PathRule("/usr/bin/curl", Access.EXEC, RuleAction.ASK, "--ask"),
    )
    api_plan = compile_(load_policy("default", overrides={"deny": ["{cwd}/../x/**"]}), cwd="/w/proj")
    assert api_plan.path_rules == (PathRule("/w/x/**", ALL, RuleAction.DENY, "api: deny"),)


def test_rule_enums_mirror_the_c_header() -> None:
    header = (REPO / "csrc/viewbox.h").read_text()
    access = {name: int(value) for name, value in re.findall(r"#define VB_ACCESS_(\w+)\s+(\d+)", header)}
    actions = {name: int(value) for name, value in re.findall(r"#define VB_RULE_(\w+)\s+(\d+)", header)}
    assert access == {member.name: member.value for member in Access}
    assert actions == {member.name: member.value for member in RuleAction}


def test_show_prints_rules_in_order_with_origins_and_loads_back(in_tmp: Path) -> None:
    write(in_tmp, "policy.toml", """
        [viewbox]
        extends = ["default"]
        [fs]
        allow = ["read:{cwd}/public.secret"]
        deny = ["**/*.secret", 'write:/data/\\[1\\]']
    """)
    policy = load_policy("policy.toml", overrides={"deny": ["{cwd}/public.secret"]}, override_origin="cli")
    text = render_policy(policy)
    assert textwrap.dedent("""\
        rules = [
            "deny:/**/*.secret",  # from policy.toml:5: [fs].deny[0]
            "deny:write:/data/\\\\[1\\\\]",  # from policy.toml:5: [fs].deny[1]
            "allow:read:{cwd}/public.secret",  # from policy.toml:4: [fs].allow[0]
            "deny:{cwd}/public.secret",  # from --deny
        ]
    """) in text
    # Flattened into one file's deny and allow, the --deny would come before the allow and lose:
    # the shown policy keeps the order, so it is the same policy.
    (in_tmp / "shown.toml").write_text(text)
    again = load_policy("shown.toml")
    assert again == policy
    assert [(r.glob, r.access, r.action) for r in compile_(again, cwd="/w").path_rules] == \
        [(r.glob, r.access, r.action) for r in compile_(policy, cwd="/w").path_rules]
    assert "rules = []" in render_policy(load_policy("default"))


def test_cli_rule_flags_reach_the_policy_as_written(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    for verb in (["run"], ["show"]):
        args = parser.parse_args([*verb, "--deny", "**/*.pem", "--allow", "read:/srv/a.pem", "--deny", "write:/etc/**",
                                  "--ask", "exec:/usr/bin/curl"] + (["--", "true"] if verb == ["run"] else []))
        assert cli._overrides(args) == {"deny": ["**/*.pem", "write:/etc/**"], "allow": ["read:/srv/a.pem"],
                                        "ask": ["exec:/usr/bin/curl"]}
    assert cli.main(["show", "--allow", "read:/srv/a.pem", "--deny", "**/*.pem"]) == 0
    shown = capsys.readouterr().out
    assert '    "deny:/**/*.pem",  # from --deny\n    "allow:read:/srv/a.pem",  # from --allow\n' in shown
    assert cli.main(["show", "--deny", "reed:/x", "--ask", "x/y"]) == 125
    assert capsys.readouterr().err.splitlines() == [
        'viewbox: --deny: unknown access "reed" in "reed:/x" (did you mean "read"?)',
        'viewbox: --ask: glob must be absolute ("/...") or start with "**/", got "x/y"',
    ]
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    run_help = " ".join(capsys.readouterr().out.split())
    assert "--deny [ACCESS:]GLOB" in run_help and "--allow [ACCESS:]GLOB" in run_help
    assert "The last rule matching a path decides" in run_help


def test_api_rule_keywords_must_be_sequences_of_rules() -> None:
    with pytest.raises(PolicyErrors) as excinfo:
        load_policy("default", overrides={"deny": "/etc/**", "allow": ["/ok", 7]})
    assert messages(excinfo) == [
        "api: deny: expected an array, got string \"/etc/**\"",
        'api: allow: expected a string "[ACCESS:]GLOB", got integer 7',
    ]
