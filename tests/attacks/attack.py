"""Escape attempts, run natively and inside viewbox by tests/test_attacks.py.

    /usr/bin/python3 attack.py NAME [ARGS...]

Each attempt makes the real system calls through ctypes (the standard
library only: the sandbox shows the host's /usr/bin/python3, nothing else)
and prints one JSON object: for every step, {"ok": true, ...} when the
kernel let it through, or {"errno": N, "error": "EPERM"} when it refused.
The exit status is 0 whenever the attempt could be made at all; the test
decides what the answers mean. Nothing here touches the host: children are
our own, ptys are fresh, mounts happen only in namespaces made for them.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 syscall numbers (the only architecture the attacks are written for).
NR = {
    "ioctl": 16, "ptrace": 101, "clone": 56, "mount": 165, "unshare": 272, "process_vm_readv": 310,
    "bpf": 321, "io_uring_setup": 425, "clone3": 435, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "keyctl": 250, "add_key": 248,
}
X32_BIT = 0x40000000

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
TIOCSTI = 0x5412
TIOCSCTTY = 0x540E
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_PROCESS_KEYRING = -2
BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


def syscall(name: str, *args: object, x32: bool = False) -> dict:
    """One raw system call: {"ok": true, "ret": N} or {"errno": N, "error": "ENAME"}."""
    nr = NR[name] | (X32_BIT if x32 else 0)
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *args)
    if ret == -1:
        return failed(ctypes.get_errno())
    return {"ok": True, "ret": ret}


def failed(err: int) -> dict:
    return {"errno": err, "error": errno.errorcode.get(err, str(err))}


def oserror(exc: OSError) -> dict:
    return failed(exc.errno or 0)


def forked_child() -> int:
    """A child that waits to be looked at, then exits."""
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    return pid


def end(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


# --- the attempts --------------------------------------------------------------

def attack_io_uring() -> dict:
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    result = syscall("io_uring_setup", ctypes.c_uint(4), params)
    if result.get("ok"):
        os.close(result["ret"])
    return {"io_uring_setup": result}


def attack_ptrace() -> dict:
    """PTRACE_ATTACH to our own child: no Yama here, so natively this works."""
    pid = forked_child()
    try:
        result = syscall("ptrace", ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(pid), None, None)
        if result.get("ok"):
            os.waitpid(pid, 0)  # the attach stop
            syscall("ptrace", ctypes.c_long(PTRACE_DETACH), ctypes.c_long(pid), None, None)
    finally:
        end(pid)
    return {"ptrace_attach": result}


class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def attack_process_vm_readv() -> dict:
    """Reads a secret out of a child's memory (same address: the child is a fork)."""
    secret = ctypes.create_string_buffer(b"secret-in-the-child", 32)
    pid = forked_child()
    ctypes.memset(secret, 0, 32)  # only the child still holds the secret
    try:
        into = ctypes.create_string_buffer(32)
        local = IOVec(ctypes.cast(into, ctypes.c_void_p), 32)
        remote = IOVec(ctypes.cast(secret, ctypes.c_void_p), 32)
        result = syscall("process_vm_readv", ctypes.c_long(pid), ctypes.byref(local), ctypes.c_ulong(1),
                         ctypes.byref(remote), ctypes.c_ulong(1), ctypes.c_ulong(0))
        if result.get("ok"):
            result["read"] = into.value.decode(errors="replace")
    finally:
        end(pid)
    return {"process_vm_readv": result}


def attack_open_by_handle_at(handle_hex: str, mount_path: str) -> dict:
    """The "shocker" escape: open a file by a handle made outside the view.

    `handle_hex` is a struct file_handle (handle_bytes, handle_type, f_handle)
    the test made on the host; `mount_path` is any path on that filesystem
    visible here. Also tries to make a handle itself (name_to_handle_at)."""
    handle = ctypes.create_string_buffer(bytes.fromhex(handle_hex))
    result = {}
    try:
        mount_fd = os.open(mount_path, os.O_RDONLY)
    except OSError as exc:
        return {"open_mount_path": oserror(exc)}
    opened = syscall("open_by_handle_at", ctypes.c_int(mount_fd), handle, ctypes.c_int(os.O_RDONLY))
    if opened.get("ok"):
        opened["read"] = os.read(opened["ret"], 200).decode(errors="replace")
        os.close(opened["ret"])
    result["open_by_handle_at"] = opened
    own = ctypes.create_string_buffer(struct.pack("=Ii", 128, 0) + bytes(128))
    mount_id = ctypes.c_int()
    result["name_to_handle_at"] = syscall("name_to_handle_at", ctypes.c_int(-100), mount_path.encode(), own,
                                          ctypes.byref(mount_id), ctypes.c_int(0))
    os.close(mount_fd)
    return result


def attack_userns_mount() -> dict:
    """A new user namespace gives back every capability; with it, mount a tmpfs.

    Runs in a child so that the caller's namespaces stay as they were; the
    mount namespace is made private before mounting, so nothing propagates."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = {"unshare": syscall("unshare", ctypes.c_int(CLONE_NEWUSER | CLONE_NEWNS))}
        if out["unshare"].get("ok"):
            out["make_private"] = syscall("mount", None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None)
            out["mount"] = syscall("mount", b"none", b"/tmp", b"tmpfs", ctypes.c_ulong(0), None)
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.waitpid(pid, 0)
    out = json.loads(data)
    out["unshare_user_only"] = unshare_in_child(CLONE_NEWUSER)
    out["clone_newuser"] = clone_in_child(CLONE_NEWUSER)
    out["clone3_newuser"] = clone3_in_child(CLONE_NEWUSER)
    return out


def attack_mount_tmpfs(target: str) -> dict:
    """mount(2) straight away, in the namespaces we were given (only ever run inside)."""
    return {"mount": syscall("mount", b"none", target.encode(), b"tmpfs", ctypes.c_ulong(0), None)}


def unshare_in_child(flags: int) -> dict:
    pid = os.fork()
    if pid == 0:
        result = syscall("unshare", ctypes.c_int(flags))
        os._exit(0 if result.get("ok") else result["errno"])
    return child_result(pid)


def _forked(ret: int) -> dict:
    """The result of a raw fork-like syscall: the child exits at once, the parent reaps it."""
    if ret == 0:
        os._exit(0)
    if ret == -1:
        return failed(ctypes.get_errno())
    os.waitpid(ret, 0)
    return {"ok": True}


def clone_in_child(flags: int) -> dict:
    """Raw clone(flags | SIGCHLD) without a new stack: the child returns here and exits at once."""
    return _forked(libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_ulong(flags | SIGCHLD), None, None, None, None))


def clone3_in_child(flags: int) -> dict:
    args = ctypes.create_string_buffer(struct.pack("=11Q", flags, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, 0))
    return _forked(libc.syscall(ctypes.c_long(NR["clone3"]), args, ctypes.c_size_t(88)))


def child_result(pid: int) -> dict:
    """A child's exit status as a step result: 0 is success, N an errno."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {"ok": True} if code == 0 else failed(code) if code > 0 else {"signal": -code}


def attack_tiocsti() -> dict:
    """Types into a terminal: a fresh pty made our controlling terminal, then
    TIOCSTI with the plain request number and with the high 32 bits set
    (the kernel reads the request as a 32-bit int, so both mean TIOCSTI)."""
    out = {}
    try:
        with open("/proc/sys/dev/tty/legacy_tiocsti") as f:
            out["legacy_tiocsti"] = int(f.read())
    except OSError:
        out["legacy_tiocsti"] = None
    master, slave = os.openpty()
    for label, request in (("tiocsti", TIOCSTI), ("tiocsti_high_bits", TIOCSTI | 0xFFFFFFFF00000000)):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            ctty = syscall("ioctl", ctypes.c_int(slave), ctypes.c_ulong(TIOCSCTTY), ctypes.c_ulong(0))
            if not ctty.get("ok"):
                os._exit(200)
            char = ctypes.c_char(b"x")
            result = syscall("ioctl", ctypes.c_int(slave), ctypes.c_ulong(request), ctypes.byref(char))
            os._exit(0 if result.get("ok") else result["errno"])
        out[label] = child_result(pid)
        if out[label] == failed(200):
            out[label] = {"setup_failed": "TIOCSCTTY"}
    os.close(master)
    os.close(slave)
    return out


def attack_tiocsti_fd(fd: str) -> dict:
    """Types into the terminal on descriptor `fd` (our stdin: the caller's terminal)."""
    out = {}
    for label, request in (("tiocsti", TIOCSTI), ("tiocsti_high_bits", TIOCSTI | 0xFFFFFFFF00000000)):
        char = ctypes.c_char(b"#")
        out[label] = syscall("ioctl", ctypes.c_int(int(fd)), ctypes.c_ulong(request), ctypes.byref(char))
    return out


def attack_write_back(*paths: str) -> dict:
    """Writes each file's current content back to it: a no-op where allowed (global sysctls)."""
    out = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                value = f.read()
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, value)
            finally:
                os.close(fd)
            out[path] = {"ok": True}
        except OSError as exc:
            out[path] = oserror(exc)
    return out


def attack_forge_status(path: str) -> dict:
    """Writes a wait status of 0 into `path`: the sandbox's init reports the command's
    status to viewbox through a pipe it holds (as fd 3)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        return {"open": oserror(exc)}
    try:
        os.write(fd, struct.pack("=i", 0))
        return {"open": {"ok": True}, "write": {"ok": True}}
    except OSError as exc:
        return {"open": {"ok": True}, "write": oserror(exc)}
    finally:
        os.close(fd)


def attack_keyctl() -> dict:
    return {
        "keyctl": syscall("keyctl", ctypes.c_long(KEYCTL_GET_KEYRING_ID),
                          ctypes.c_long(KEY_SPEC_PROCESS_KEYRING), ctypes.c_long(1)),
        "add_key": syscall("add_key", b"user", b"viewbox-attack", b"payload", ctypes.c_size_t(7),
                           ctypes.c_long(KEY_SPEC_PROCESS_KEYRING)),
    }


def attack_x32() -> dict:
    """The same denied call through the x32 ABI (syscall number | 0x40000000)."""
    return {
        "keyctl_x32": syscall("keyctl", ctypes.c_long(KEYCTL_GET_KEYRING_ID),
                              ctypes.c_long(KEY_SPEC_PROCESS_KEYRING), ctypes.c_long(1), x32=True),
        "bpf_x32": syscall("bpf", ctypes.c_int(BPF_MAP_CREATE), None, ctypes.c_uint(0), x32=True),
    }


def attack_bpf() -> dict:
    """An array map (root can natively), and a command no kernel knows: natively EINVAL
    for anyone, so an EPERM for it can only come from the sandbox."""
    attr = ctypes.create_string_buffer(struct.pack("=IIII", BPF_MAP_TYPE_ARRAY, 4, 4, 1), 128)
    created = syscall("bpf", ctypes.c_int(BPF_MAP_CREATE), attr, ctypes.c_uint(128))
    if created.get("ok"):
        os.close(created["ret"])
    return {"map_create": created,
            "unknown_command": syscall("bpf", ctypes.c_int(0x7FFF), attr, ctypes.c_uint(128))}


def attack_fds(probe: str) -> dict:
    """Which descriptors we were started with, and whether fd `probe` reads."""
    listed = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    # the listing had its own directory fd open: keep only what is still open
    still_open = []
    for fd in listed:
        try:
            os.fstat(fd)
            still_open.append(fd)
        except OSError:
            pass
    out = {"fds": still_open, "targets": {}}
    for fd in still_open:
        try:
            out["targets"][fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as exc:
            out["targets"][fd] = oserror(exc)
    try:
        out["read"] = {"ok": True, "data": os.read(int(probe), 100).decode(errors="replace")}
    except OSError as exc:
        out["read"] = oserror(exc)
    return out


def attack_read(*paths: str) -> dict:
    """Tries to read each path (a file: its first bytes; a directory: its listing)."""
    out = {}
    for path in paths:
        try:
            if os.path.isdir(path):
                out[path] = {"ok": True, "listing": sorted(os.listdir(path))}
            else:
                with open(path, "rb") as f:
                    out[path] = {"ok": True, "data": f.read(4096).decode(errors="replace")}
        except OSError as exc:
            out[path] = oserror(exc)
    return out


def attack_write(*paths: str) -> dict:
    """Tries to create each path as a file."""
    out = {}
    for path in paths:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"written from inside")
            os.close(fd)
            out[path] = {"ok": True}
        except OSError as exc:
            out[path] = oserror(exc)
    return out


def attack_dir_fd(fd: str, name: str, outside: str) -> dict:
    """`fd` is a directory of the host (the sandbox's stdin, moved there by the shell:
    Python refuses a directory as stdin): read and create files through it and through
    /proc/self/fd/N, and climb out of it with ".." to `outside`, a path relative to it."""
    out = {}
    dir_fd = int(fd)
    steps = {
        "openat_read": lambda: os.open(name, os.O_RDONLY, dir_fd=dir_fd),
        "proc_fd_read": lambda: os.open(f"/proc/self/fd/{dir_fd}/{name}", os.O_RDONLY),
        "dotdot_read": lambda: os.open(outside, os.O_RDONLY, dir_fd=dir_fd),
        "proc_fd_dotdot_read": lambda: os.open(f"/proc/self/fd/{dir_fd}/{outside}", os.O_RDONLY),
        "openat_create": lambda: os.open("created-from-inside", os.O_WRONLY | os.O_CREAT, 0o644,
                                         dir_fd=dir_fd),
        "proc_fd_create": lambda: os.open(f"/proc/self/fd/{dir_fd}/created-via-proc",
                                          os.O_WRONLY | os.O_CREAT, 0o644),
    }
    for label, step in steps.items():
        try:
            fd = step()
            out[label] = {"ok": True}
            if "read" in label:
                out[label]["data"] = os.read(fd, 200).decode(errors="replace")
            os.close(fd)
        except OSError as exc:
            out[label] = oserror(exc)
    return out


def attack_connect(*targets: str) -> dict:
    """TCP connects to HOST:PORT targets, each with a 3 s timeout; how long each took."""
    out = {}
    for target in targets:
        host, port = target.rsplit(":", 1)
        start = time.monotonic()
        try:
            with socket.create_connection((host, int(port)), timeout=3):
                out[target] = {"ok": True}
        except socket.timeout:
            out[target] = {"timeout": True}
        except OSError as exc:
            out[target] = oserror(exc)
        out[target]["seconds"] = round(time.monotonic() - start, 3)
    return out


def attack_kill_all() -> dict:
    """kill(-1, SIGKILL): every process we may signal. Survives only because init and we
    are exempt; the test checks that nothing outside the sandbox was hit."""
    return {"kill_all": {"ok": True} if libc.kill(-1, 9) == 0 else failed(ctypes.get_errno())}


ATTACKS = {name[len("attack_"):]: fn for name, fn in globals().items() if name.startswith("attack_")}


def main() -> None:
    name, *args = sys.argv[1:]
    result = ATTACKS[name](*args)
    result["uid"] = os.getuid()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
