"""Escape attempts: each must fail inside viewbox, as root and as user nobody.

The attempts are tests/attacks/attack.py (Python with ctypes, run by the
host's /usr/bin/python3, which the default view shows) and
tests/attacks/int80.c. Each runs natively first, as the same user, to show
that it works there (so the test would notice a hole), then under
`viewbox run` with the default policy, where the seccomp layer must answer
with its own errno: EPERM for denied calls, ENOSYS for clone3 and the x32
ABI, and a kill for the 32-bit ABI.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
from collections.abc import Iterator

import pytest

import viewbox
from conftest import ATTACKS, INSIDE_PYTHON, Caller, make_world_dir, stop, unique
from viewbox import core

EPERM = {"errno": errno.EPERM, "error": "EPERM"}
ENOSYS = {"errno": errno.ENOSYS, "error": "ENOSYS"}


@pytest.fixture(scope="module")
def attack_dir() -> Iterator[pathlib.Path]:
    """The attack programs in a directory nobody can read, bound into the sandbox with --ro."""
    path = make_world_dir(0o755, prefix="viewbox-attacks-")
    shutil.copy(ATTACKS / "attack.py", path / "attack.py")
    (path / "attack.py").chmod(0o644)
    if shutil.which("gcc"):
        subprocess.run(["gcc", "-O2", "-o", str(path / "int80"), str(ATTACKS / "int80.c")], check=True)
        (path / "int80").chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def native(caller: Caller, attack_dir: pathlib.Path, name: str, *args: str, **kw: object) -> dict:
    done = caller.native([INSIDE_PYTHON, str(attack_dir / "attack.py"), name, *args], **kw)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["uid"] == caller.uid
    return result


def inside(caller: Caller, attack_dir: pathlib.Path, name: str, *args: str, flags: tuple[str, ...] = (),
           **kw: object) -> dict:
    done = caller.run(["--ro", str(attack_dir), *flags, "--", INSIDE_PYTHON, str(attack_dir / "attack.py"),
                       name, *args], **kw)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["uid"] == caller.uid
    return result


def ok(step: dict) -> bool:
    return step.get("ok") is True


# --- denied system calls ----------------------------------------------------------------

def test_io_uring_setup(as_user: Caller, attack_dir: pathlib.Path) -> None:
    assert ok(native(as_user, attack_dir, "io_uring")["io_uring_setup"])
    assert inside(as_user, attack_dir, "io_uring")["io_uring_setup"] == EPERM


def test_ptrace_attach_to_own_child(as_user: Caller, attack_dir: pathlib.Path) -> None:
    assert ok(native(as_user, attack_dir, "ptrace")["ptrace_attach"])
    assert inside(as_user, attack_dir, "ptrace")["ptrace_attach"] == EPERM


def test_process_vm_readv_of_own_child(as_user: Caller, attack_dir: pathlib.Path) -> None:
    assert native(as_user, attack_dir, "process_vm_readv")["process_vm_readv"]["read"] == "secret-in-the-child"
    assert inside(as_user, attack_dir, "process_vm_readv")["process_vm_readv"] == EPERM


def _file_handle(path: str) -> str:
    """name_to_handle_at(path) made here on the host, as hex of struct file_handle."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(struct.pack("=Ii", 128, 0) + bytes(128))
    mount_id = ctypes.c_int()
    if libc.syscall(ctypes.c_long(303), ctypes.c_int(-100), path.encode(), buf, ctypes.byref(mount_id),
                    ctypes.c_int(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    size = struct.unpack("=I", buf.raw[:4])[0]
    return buf.raw[:8 + size].hex()


def test_open_by_handle_at_reaches_no_hidden_file(as_user: Caller, attack_dir: pathlib.Path) -> None:
    """The "shocker" escape: a handle of a host file the view hides (host /tmp), opened through
    a directory of the same filesystem the view shows (/)."""
    if os.stat("/tmp").st_dev != os.stat("/").st_dev:
        pytest.skip("the host's /tmp is not on the root filesystem: no handle to forge across the view")
    secret = pathlib.Path("/tmp") / unique("viewbox-handle")
    secret.write_text("behind the view\n")
    secret.chmod(0o644)
    try:
        handle = _file_handle(str(secret))
        here = native(as_user, attack_dir, "open_by_handle_at", handle, "/")
        assert ok(here["name_to_handle_at"])
        if as_user.uid == 0:  # nobody lacks CAP_DAC_READ_SEARCH, natively already
            assert here["open_by_handle_at"]["read"] == "behind the view\n"
        there = inside(as_user, attack_dir, "open_by_handle_at", handle, "/")
        assert there["open_by_handle_at"] == EPERM
        assert there["name_to_handle_at"] == EPERM
    finally:
        secret.unlink()


def test_new_user_namespace_then_mount(as_user: Caller, attack_dir: pathlib.Path) -> None:
    here = native(as_user, attack_dir, "userns_mount")
    assert ok(here["unshare"]) and ok(here["mount"])
    assert ok(here["unshare_user_only"]) and ok(here["clone_newuser"]) and ok(here["clone3_newuser"])
    there = inside(as_user, attack_dir, "userns_mount")
    assert there["unshare"] == EPERM and "mount" not in there
    assert there["unshare_user_only"] == EPERM
    assert there["clone_newuser"] == EPERM
    assert there["clone3_newuser"] == ENOSYS  # so that libc falls back to clone, whose flags are checked


def test_mount_inside(as_user: Caller, attack_dir: pathlib.Path) -> None:
    # Only inside: natively, root would really mount. Inside, root of the sandbox's
    # user namespace owns its mount namespace, so only seccomp (and dropped caps) stop it.
    assert inside(as_user, attack_dir, "mount_tmpfs", "/tmp")["mount"] == EPERM


def test_tiocsti_with_and_without_high_bits(as_user: Caller, attack_dir: pathlib.Path) -> None:
    here = native(as_user, attack_dir, "tiocsti")
    for step in ("tiocsti", "tiocsti_high_bits"):
        # natively: injected when legacy TIOCSTI is on, else refused by the tty layer (EIO), never EPERM
        if here["legacy_tiocsti"] == 1:
            assert ok(here[step]), here
        else:
            assert here[step] != EPERM, here
    there = inside(as_user, attack_dir, "tiocsti")
    assert there["tiocsti"] == EPERM, there
    assert there["tiocsti_high_bits"] == EPERM, there


def test_keyctl(as_user: Caller, attack_dir: pathlib.Path) -> None:
    here = native(as_user, attack_dir, "keyctl")
    assert ok(here["keyctl"]) and ok(here["add_key"])
    there = inside(as_user, attack_dir, "keyctl")
    assert there["keyctl"] == EPERM and there["add_key"] == EPERM


def test_bpf(as_user: Caller, attack_dir: pathlib.Path) -> None:
    here = native(as_user, attack_dir, "bpf")
    if as_user.uid == 0:
        assert ok(here["map_create"])
    # the kernel itself answers an unknown command with EINVAL, for anyone
    assert here["unknown_command"]["error"] == "EINVAL"
    there = inside(as_user, attack_dir, "bpf")
    assert there["map_create"] == EPERM and there["unknown_command"] == EPERM


def test_x32_variant_of_a_denied_call(as_user: Caller, attack_dir: pathlib.Path) -> None:
    here = native(as_user, attack_dir, "x32")
    if here["keyctl_x32"] != ENOSYS:  # a kernel with the x32 ABI: the call works natively
        assert ok(here["keyctl_x32"])
    there = inside(as_user, attack_dir, "x32")
    assert there["keyctl_x32"] == ENOSYS and there["bpf_x32"] == ENOSYS


def test_32_bit_abi_kills(as_user: Caller, attack_dir: pathlib.Path) -> None:
    if not (attack_dir / "int80").exists():
        pytest.skip("gcc is not installed")
    here = as_user.native([str(attack_dir / "int80")])
    if here.returncode != 0:
        pytest.skip(f"no 32-bit ABI on this kernel natively: {here.stdout.strip()}")
    done = as_user.run(["--ro", str(attack_dir), "--", str(attack_dir / "int80")])
    assert done.returncode == 128 + signal.SIGSYS, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""


def test_tiocsti_into_the_callers_terminal(as_user: Caller, attack_dir: pathlib.Path) -> None:
    """`viewbox run` started from a terminal hands that terminal in as stdin: the command
    must not type into it (it would run as the next command of the user's shell)."""
    def in_terminal(argv: list[str]) -> dict:
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen(["setsid", "--ctty", *argv], stdin=slave, stdout=slave, stderr=slave,
                                    env=as_user.viewbox_env(None), cwd="/", **as_user.user_kw())
            os.close(slave)
            output = b""
            while True:  # until the last holder of the terminal closes it (EIO)
                try:
                    block = os.read(master, 4096)
                except OSError:
                    break
                if not block:
                    break
                output += block
            assert proc.wait(timeout=30) == 0, output
        finally:
            os.close(master)
        line = next(line for line in output.decode().splitlines() if '"uid"' in line)
        return json.loads(line[line.index("{"):])

    attack = [INSIDE_PYTHON, str(attack_dir / "attack.py"), "tiocsti_fd", "0"]
    here = in_terminal(attack)
    with open("/proc/sys/dev/tty/legacy_tiocsti") as f:
        if f.read().strip() == "1":
            assert ok(here["tiocsti"]) and ok(here["tiocsti_high_bits"])
    there = in_terminal(as_user.viewbox_argv(["run", "--ro", str(attack_dir), "--", *attack]))
    assert there["tiocsti"] == EPERM and there["tiocsti_high_bits"] == EPERM


def test_global_sysctls_are_not_writable(as_user: Caller, attack_dir: pathlib.Path) -> None:
    """kernel.core_pattern and friends belong to the host: a sandbox that may write
    core_pattern runs any program as the host's root at the next crash. The attempt writes
    each file's current value back (O_WRONLY, no O_TRUNC), so it changes nothing even
    where it succeeds."""
    sysctls = [path for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/printk_ratelimit",
                                 "/proc/sys/vm/swappiness", "/proc/sys/fs/file-max") if os.path.exists(path)]
    assert sysctls
    here = native(as_user, attack_dir, "write_back", *sysctls)
    if as_user.uid == 0:
        assert all(ok(here[path]) for path in sysctls), here  # the host's root may, natively
    there = inside(as_user, attack_dir, "write_back", *sysctls)
    for path in sysctls:
        assert there[path].get("error") in ("EACCES", "EPERM", "EROFS"), (path, there[path])


# --- the seccomp program itself, for ABIs this kernel may not have ---------------------------

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000


def run_filter(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, args: tuple[int, ...] = ()) -> int:
    """Classic BPF as seccomp runs it, on struct seccomp_data {nr, arch, ip, args[6]}:
    the few instructions a seccomp filter of viewbox's shape uses."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == 0x15:  # BPF_JMP | BPF_JEQ | BPF_K
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x45:  # BPF_JMP | BPF_JSET | BPF_K
            pc += 1 + (jt if acc & k else jf)
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            raise AssertionError(f"instruction {code:#x} at {pc}: extend run_filter")


@pytest.fixture(scope="module")
def default_filter() -> bytes:
    plan = viewbox.Sandbox().compile(["true"])
    return core.seccomp_program(plan.seccomp_deny_groups)


def test_filter_answers_x32_with_enosys(default_filter: bytes) -> None:
    """This kernel has no x32 ABI, so the live test above cannot tell the filter's ENOSYS
    from the kernel's: the program itself must refuse x32 numbers, denied or not."""
    for name in ("keyctl", "bpf", "getpid"):
        nr = {"keyctl": 250, "bpf": 321, "getpid": 39}[name]
        assert run_filter(default_filter, nr | 0x40000000) == RET_ERRNO | errno.ENOSYS, name
    assert run_filter(default_filter, 250) == RET_ERRNO | errno.EPERM
    assert run_filter(default_filter, 39) == RET_ALLOW


def test_filter_kills_foreign_architectures(default_filter: bytes) -> None:
    assert run_filter(default_filter, 20, arch=AUDIT_ARCH_I386) == RET_KILL_PROCESS
    assert run_filter(default_filter, 39, arch=0xC00000B7) == RET_KILL_PROCESS  # aarch64 data on x86_64


def test_filter_compares_ioctl_requests_on_32_bits(default_filter: bytes) -> None:
    for request in (0x5412, 0xFFFFFFFF00005412, 0x100005412, 0x541C):
        assert run_filter(default_filter, 16, args=(0, request)) == RET_ERRNO | errno.EPERM, hex(request)
    assert run_filter(default_filter, 16, args=(0, 0x5401)) == RET_ALLOW  # TCGETS


# --- descriptors and /proc paths to the host ---------------------------------------------------

def test_inherited_fd_is_closed_cli(as_user: Caller, attack_dir: pathlib.Path, world_dir: pathlib.Path) -> None:
    """An fd ≥ 3 that viewbox itself inherits (here: a root-only file, even for nobody)."""
    secret = world_dir / "secret"
    secret.write_text("inherited secret")
    secret.chmod(0o600)
    fd = os.open(secret, os.O_RDONLY)
    try:
        here = as_user.native([INSIDE_PYTHON, str(attack_dir / "attack.py"), "fds", str(fd)], pass_fds=(fd,))
        assert json.loads(here.stdout)["read"]["data"] == "inherited secret"
        proc = as_user.popen(["run", "--ro", str(attack_dir), "--", INSIDE_PYTHON, str(attack_dir / "attack.py"),
                              "fds", str(fd)], pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        there = json.loads(out)
        assert there["fds"] == [0, 1, 2], there["targets"]
        assert there["read"]["error"] == "EBADF"
        assert "inherited secret" not in out
    finally:
        os.close(fd)


def test_inherited_fd_is_closed_api(attack_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("inherited secret")
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)  # no O_CLOEXEC: a fork/exec would hand it on
    try:
        result = viewbox.run([INSIDE_PYTHON, str(attack_dir / "attack.py"), "fds", str(fd)], ro=[str(attack_dir)])
        assert result.returncode == 0, result.stderr
        there = json.loads(result.stdout)
        assert there["fds"] == [0, 1, 2], there["targets"]
        assert there["read"]["error"] == "EBADF"
    finally:
        os.close(fd)


def test_proc_paths_to_the_host(as_user: Caller, attack_dir: pathlib.Path) -> None:
    """/proc/1 is the sandbox's init, a clone of the viewbox process: its root, cwd,
    environment and memory must not lead to the host; a file in the host's /tmp must not
    be reachable through any /proc path."""
    marker = pathlib.Path("/tmp") / unique("viewbox-proc-root")
    marker.write_text("host marker\n")
    marker.chmod(0o644)
    host_env = {"PATH": "/usr/bin:/bin", "AWS_SECRET_ACCESS_KEY": "leaked-through-proc"}
    paths = [f"/proc/1/root{marker}", "/proc/1/root/", f"/proc/1/cwd{marker}", "/proc/1/cwd/",
             f"/proc/self/root{marker}", f"/proc/2/root{marker}", f"/proc/thread-self/root{marker}",
             "/proc/1/environ", "/proc/1/mem", "/proc/1/maps", f"/proc/1/fd/", f"/proc/1/map_files/"]
    try:
        there = inside(as_user, attack_dir, "read", *paths, env=host_env)
    finally:
        marker.unlink()
    text = json.dumps(there)
    assert "host marker" not in text and "leaked-through-proc" not in text
    for path in paths:
        result = there[path]
        if ok(result) and "listing" in result:  # a listing, if any, is of the view
            assert marker.name not in result["listing"]
            assert "pyenv" not in " ".join(result["listing"])
        else:
            assert result.get("error") in ("EACCES", "ENOENT", "EPERM"), (path, result)
    assert there[f"/proc/1/root{marker}"]["error"] in ("EACCES", "ENOENT")


def test_command_cannot_forge_its_exit_status(as_user: Caller, attack_dir: pathlib.Path) -> None:
    """The init reports the command's wait status through a pipe (its fd 3); the command
    must not reach it through /proc/1/fd/3 to make a failure look like success."""
    attack = f"{INSIDE_PYTHON} {attack_dir}/attack.py forge_status /proc/1/fd/3"
    done = as_user.run(["--ro", str(attack_dir), "--", "sh", "-c", f"{attack}; exit 9"])
    assert done.returncode == 9, done.stderr
    assert json.loads(done.stdout)["open"]["error"] in ("EACCES", "EPERM"), done.stdout


def _dir_fd_driver(world_dir: pathlib.Path, attack_dir: pathlib.Path) -> str:
    """A Python program: spawn the dir_fd attack with stdin = a host directory, via the API
    (the CLI cannot take a directory as stdin: its own Python refuses to start)."""
    passed, hidden = world_dir / "passed", world_dir / "hidden"
    command = (f"exec 3<&0 </dev/null; exec {INSIDE_PYTHON} {attack_dir}/attack.py "
               f"dir_fd 3 inside-passed ../hidden/secret")
    return (
        "import json, os, sys, viewbox\n"
        f"fd = os.open({str(passed)!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
        f"box = viewbox.Sandbox(ro=[{str(attack_dir)!r}], hide=[{str(hidden)!r}])\n"
        "try:\n"
        f"    proc = box.spawn(['sh', '-c', {command!r}], stdin=fd, stdout=viewbox.PIPE)\n"
        "except viewbox.ViewboxError as e:\n"
        "    print(json.dumps({'refused': str(e)}))\n"
        "    sys.exit(0)\n"
        "os.close(fd)\n"
        "out, _ = proc.communicate(timeout=30)\n"
        "sys.stdout.write(out.decode())\n"
    )


def test_directory_as_stdin_does_not_open_the_host(as_user: Caller, attack_dir: pathlib.Path,
                                                    world_dir: pathlib.Path) -> None:
    """stdin is a host directory: climbing out of it with ".." (directly and through
    /proc/self/fd/N) must not reach what the view hides, nor write to the host. Either
    viewbox refuses such a descriptor, or the sandbox gets nothing through it."""
    (world_dir / "passed").mkdir(mode=0o777)
    (world_dir / "passed").chmod(0o777)
    (world_dir / "passed" / "inside-passed").write_text("in the passed dir\n")
    (world_dir / "hidden").mkdir(mode=0o755)
    (world_dir / "hidden" / "secret").write_text("hidden from the view\n")
    for path in (world_dir / "passed" / "inside-passed", world_dir / "hidden" / "secret"):
        path.chmod(0o644)

    passed_fd = os.open(world_dir / "passed", os.O_RDONLY | os.O_DIRECTORY)
    try:
        here = as_user.native(["sh", "-c", f"exec 3<&0 </dev/null; exec {INSIDE_PYTHON} {attack_dir}/attack.py "
                                           "dir_fd 3 inside-passed ../hidden/secret"], stdin=passed_fd)
    finally:
        os.close(passed_fd)
    assert json.loads(here.stdout)["dotdot_read"]["data"] == "hidden from the view\n"  # natively, of course

    done = as_user.python(["-c", _dir_fd_driver(world_dir, attack_dir)])
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout)
    if "refused" in there:  # viewbox may refuse such a descriptor, saying why
        assert "\n" not in there["refused"] and "stdin" in there["refused"], there
        return
    assert "hidden from the view" not in done.stdout
    for step in ("dotdot_read", "proc_fd_dotdot_read", "openat_create", "proc_fd_create"):
        assert not ok(there[step]), (step, there)
    assert sorted(os.listdir(world_dir / "passed")) == ["inside-passed"]


def test_kill_all_spares_the_host(as_user: Caller, attack_dir: pathlib.Path) -> None:
    """kill(-1, SIGKILL) inside reaches nothing outside, not even the caller's own processes."""
    bystander = subprocess.Popen(["sleep", "60"], **as_user.user_kw())
    try:
        there = inside(as_user, attack_dir, "kill_all")
        assert there["kill_all"]["error"] == "ESRCH"  # nothing else in its pid namespace to signal
        assert bystander.poll() is None
        done = as_user.run(["--", "kill", "-9", str(bystander.pid)])
        assert done.returncode != 0 and bystander.poll() is None
    finally:
        stop(bystander)


def test_the_init_does_not_show_viewbox_s_command_line(as_user: Caller) -> None:
    """The sandbox's init is a copy of viewbox: its /proc/PID/cmdline (readable by all, dumpable
    or not) must not tell the command how viewbox was started (host paths, flags)."""
    marker = unique("host-argv")
    parent = f"import os; print(open(f'/proc/{{os.getppid()}}/cmdline').read())"
    native = as_user.native(["sh", "-c", f'{INSIDE_PYTHON} -c "{parent}"; : {marker}'])
    assert marker in native.stdout, native  # natively a child reads its parent's command line
    done = as_user.run(["--hostname", marker, "--", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"])
    assert done.returncode == 0, done.stderr
    assert marker not in done.stdout and "--hostname" not in done.stdout, done.stdout
