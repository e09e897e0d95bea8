"""Per-path rules (layer 3): [fs].deny / ask / allow, enforced by emulating
path calls through the sandbox's broker. Each attack runs natively first,
to show it would get the file where nothing stops it, then inside."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import textwrap

import pytest

from conftest import ATTACKS, INSIDE_PYTHON, Caller

SECRET = "SECRET-SECRET-SECRET\n"
PUBLIC = "public\n"

#: Each way of reaching x.secret inside a writable dir, and a few that must keep working.
#: Prints {check: "ok:<first bytes>" or "errno:<N>"} as JSON.
PROBES = textwrap.dedent("""
    import ctypes, errno, json, os, struct, sys
    work = sys.argv[1]
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}

    def attempt(name, fn):
        try:
            value = fn()
            out[name] = "ok:" + (value[:6] if isinstance(value, str) else str(value))
        except OSError as e:
            out[name] = f"errno:{e.errno}"

    def read_fd(fd):
        with os.fdopen(fd) as f:
            return f.read()

    def openat2(dirfd, path, resolve):
        how = struct.pack("QQQ", os.O_RDONLY, 0, resolve)
        fd = libc.syscall(437, dirfd, path.encode(), how, len(how))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "openat2")
        return read_fd(fd)

    attempt("python open", lambda: open(f"{work}/x.secret").read())
    dirfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    attempt("openat via a dirfd", lambda: read_fd(os.open("x.secret", os.O_RDONLY, dir_fd=dirfd)))
    attempt("openat2", lambda: openat2(dirfd, "x.secret", 0))
    attempt("openat2 beneath", lambda: openat2(dirfd, "sub/../x.secret", 0x08))  # RESOLVE_BENEATH
    attempt("symlink to it", lambda: open(f"{work}/link").read())
    attempt("hard link made beforehand", lambda: open(f"{work}/hard.txt").read())
    attempt("dot-dot", lambda: open(f"{work}/sub/../sub/../x.secret").read())
    os.chdir(f"{work}/sub")
    attempt("relative dot-dot", lambda: open("../x.secret").read())
    attempt("stat", lambda: os.stat(f"{work}/x.secret").st_size)
    attempt("O_CREAT of a new .secret", lambda: os.open(f"{work}/new.secret", os.O_WRONLY | os.O_CREAT, 0o644))
    attempt("truncate", lambda: os.truncate(f"{work}/x.secret", 0))
    attempt("hard link to it", lambda: os.link(f"{work}/x.secret", f"{work}/linked.txt"))
    attempt("rename it away", lambda: os.rename(f"{work}/y.secret", f"{work}/renamed.txt"))
    attempt("unlink", lambda: os.unlink(f"{work}/z.secret"))
    # what must keep working beside it
    attempt("other file", lambda: open(f"{work}/ok.txt").read())
    attempt("other via dirfd", lambda: read_fd(os.open("ok.txt", os.O_RDONLY, dir_fd=dirfd)))
    attempt("write a new file", lambda: open(f"{work}/made.txt", "w").write("made"))
    attempt("list the dir", lambda: ",".join(sorted(os.listdir(work)))[:0] + "listed")
    attempt("stat other", lambda: os.stat(f"{work}/ok.txt").st_size)
    held = os.open(f"{work}/ok.txt", os.O_RDONLY)
    attempt("/proc/self/fd reopened", lambda: open(f"/proc/self/fd/{held}").read())
    attempt("/dev/fd reopened", lambda: open(f"/dev/fd/{held}").read())
    attempt("/proc/self/status", lambda: open("/proc/self/status").read().split()[0])
    print(json.dumps(out))
""")

DENIED = ["python open", "openat via a dirfd", "openat2", "openat2 beneath", "symlink to it",
          "hard link made beforehand", "dot-dot", "relative dot-dot", "stat", "O_CREAT of a new .secret",
          "truncate", "rename it away", "hard link to it", "unlink"]
ALLOWED = ["other file", "other via dirfd", "write a new file", "list the dir", "stat other",
           "/proc/self/fd reopened", "/dev/fd reopened", "/proc/self/status"]


def _work(shared_dir: pathlib.Path) -> pathlib.Path:
    work = shared_dir / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    (work / "sub").mkdir(mode=0o777)
    for name in ("x", "y", "z"):
        (work / f"{name}.secret").write_text(SECRET)
    (work / "ok.txt").write_text("fine\n")
    (work / "link").symlink_to("x.secret")
    os.link(work / "x.secret", work / "hard.txt")
    for path in work.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o777 if path.is_dir() else 0o666)
    return work


def _probe(caller: Caller, shared_dir: pathlib.Path, argv_prefix: list[str] | None) -> dict[str, str]:
    script = shared_dir / "probes.py"
    script.write_text(PROBES)
    work = _work(shared_dir)
    argv = [INSIDE_PYTHON, str(script), str(work)]
    done = caller.native(argv) if argv_prefix is None else caller.run(
        ["--ro", str(script), *argv_prefix, "--", *argv])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_native_reaches_the_secret_every_way(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """Where nothing stops them, every probe reaches the file: so each check below can fail."""
    results = _probe(as_user, shared_dir, None)
    assert {name: results[name] for name in DENIED + ALLOWED} == {
        name: results[name] for name in DENIED + ALLOWED if results[name].startswith("ok:")}


def test_deny_glob_holds_every_way_in(as_user: Caller, shared_dir: pathlib.Path) -> None:
    work = shared_dir / "work"
    results = _probe(as_user, shared_dir, ["--rw", str(work), "--deny", "**/*.secret"])
    assert {name: results[name] for name in DENIED} == {name: "errno:13" for name in DENIED}
    assert all(results[name].startswith("ok:") for name in ALLOWED), results
    assert results["other file"] == "ok:fine\n"
    # what was refused changed nothing: no file created, renamed, truncated or removed
    assert sorted(p.name for p in work.iterdir()) == ["hard.txt", "link", "made.txt", "ok.txt", "sub",
                                                      "x.secret", "y.secret", "z.secret"]
    assert results["/proc/self/fd reopened"] == results["/dev/fd reopened"] == "ok:fine\n"
    assert (work / "x.secret").read_text() == SECRET


def test_cat_sees_permission_denied(as_user: Caller, shared_dir: pathlib.Path) -> None:
    work = _work(shared_dir)
    done = as_user.run(["--rw", str(work), "--deny", "**/*.secret", "--", "cat", f"{work}/x.secret"])
    assert done.returncode == 1 and "Permission denied" in done.stderr and SECRET not in done.stdout
    done = as_user.run(["--rw", str(work), "--deny", "**/*.secret", "--", "cat", f"{work}/ok.txt"])
    assert (done.returncode, done.stdout) == (0, "fine\n"), done.stderr


def test_o_path_opens_work_under_rules_and_still_hold_them(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """O_PATH descriptors of directories and files are usable as natively (as a dirfd, for
    fstat), `cp -a` into an existing directory (which opens it O_PATH) copies into it as it
    does natively, `tar` extracts symlinks (glibc's lchmod opens them O_PATH|O_NOFOLLOW), and an
    O_PATH open of a denied file or through a symlink to one fails."""
    work = _work(shared_dir)
    code = textwrap.dedent(f"""
        import errno, os, stat
        d = os.open({str(work)!r}, os.O_PATH | os.O_DIRECTORY)
        f = os.open("ok.txt", os.O_RDONLY, dir_fd=d)
        print(os.read(f, 100).decode().strip(), stat.S_ISDIR(os.fstat(d).st_mode))
        for name, flags in (("x.secret", os.O_PATH), ("link", os.O_PATH), ("link", os.O_PATH | os.O_NOFOLLOW)):
            try:
                os.open(name, flags, dir_fd=d)
                print(name, "opened")
            except OSError as e:
                print(name, errno.errorcode[e.errno])  # EOPNOTSUPP is ENOTSUP on Linux
    """)
    rules = ["--rw", str(work), "--deny", "**/*.secret", "--"]
    done = as_user.run([*rules, INSIDE_PYTHON, "-c", code])
    assert done.stdout.split() == ["fine", "True", "x.secret", "EACCES", "link", "EACCES", "link", "ENOTSUP"], \
        done.stderr
    (work / "into").mkdir(mode=0o777)
    (work / "into").chmod(0o777)
    done = as_user.run([*rules, "cp", "-a", f"{work}/sub", f"{work}/into"])
    assert done.returncode == 0, done.stderr
    assert (work / "into" / "sub").is_dir(), sorted(p.name for p in (work / "into").iterdir())
    (work / "sub" / "to-ok").symlink_to("../ok.txt")
    done = as_user.run([*rules, "sh", "-c", f"cd {work} && tar cf t.tar sub && mkdir out && tar xf t.tar -C out"])
    assert done.returncode == 0, done.stderr
    assert os.readlink(work / "out" / "sub" / "to-ok") == "../ok.txt"


def test_allow_carves_an_exception_and_access_kinds_differ(as_user: Caller, shared_dir: pathlib.Path) -> None:
    work = _work(shared_dir)
    (work / "public.secret").write_text(PUBLIC)
    (work / "public.secret").chmod(0o666)
    script = (f"cat {work}/public.secret; cat {work}/x.secret 2>/dev/null || echo refused; "
              f"echo more >> {work}/ok.txt 2>/dev/null || echo no-write; cat {work}/ok.txt")
    done = as_user.run(["--rw", str(work), "--deny", "**/*.secret", "--allow", f"{work}/public.secret",
                        "--deny", "write:**/ok.txt", "--", "sh", "-c", script])
    assert done.stdout.splitlines() == ["public", "refused", "no-write", "fine"], done.stderr


@pytest.mark.parametrize("mode", ["open", "stat", "swap"])
def test_race_never_reaches_a_denied_file(mode: str, as_user: Caller, shared_dir: pathlib.Path) -> None:
    """A thread flips the path (or swaps a component) while another calls in a loop for 10 s:
    it never gets a denied file's fd, content or metadata."""
    binary = shared_dir / "race"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(ATTACKS / "race.c")], check=True)
    base = shared_dir / "r"
    base.mkdir(mode=0o777)
    base.chmod(0o777)
    for name in ("pub", "vault"):
        (base / name).mkdir(mode=0o777)
        (base / name).chmod(0o777)
    (base / "pub" / "data").write_text(PUBLIC)
    (base / "vault" / "data").write_text(SECRET)
    (base / "ok.txt").write_text(PUBLIC)
    (base / "x.secret").write_text(SECRET)
    (base / "cur").symlink_to("pub")
    for path in base.rglob("*"):
        if path.is_file():
            path.chmod(0o666)
    args = [str(base)] if mode == "swap" else [str(base / "ok.txt"), str(base / "x.secret")]

    native = as_user.native([str(binary), mode, "3", *args])
    assert "LEAK" in native.stdout, "natively the race must reach the denied file, or the test proves nothing"
    if mode == "swap" and (base / "pub" / "data").read_text() != PUBLIC:
        # the native run left pub and vault exchanged: put them back
            (base / "pub").rename(base / "tmp")
            (base / "vault").rename(base / "pub")
            (base / "tmp").rename(base / "vault")

    done = as_user.run(["--rw", str(base), "--ro", str(binary), "--deny", "**/*.secret", "--deny", "**/vault/**",
                        "--", str(binary), mode, "10", *args], timeout=120)
    assert done.returncode == 0 and "LEAK" not in done.stdout, done.stdout + done.stderr
    counts = dict(item.split("=") for item in done.stdout.split())
    assert int(counts["ok"]) > 100 and int(counts["refused"]) > 100, counts  # both sides of the race ran


def test_created_files_keep_the_callers_umask(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """The broker creates them, but with the mode the caller would have got."""
    work = _work(shared_dir)
    script = f"umask 077; echo x > {work}/f; mkdir {work}/d; stat -c '%a' {work}/f {work}/d"
    plain = as_user.run(["--rw", str(work), "--", "sh", "-c", script.replace("/f", "/f0").replace("/d", "/d0")])
    ruled = as_user.run(["--rw", str(work), "--deny", "**/*.secret", "--", "sh", "-c", script])
    assert plain.stdout.split() == ruled.stdout.split() == ["600", "700"], ruled.stderr


#: fstat of fds, answered by the supervisor alone (from a pidfd of the caller it may keep
#: between calls): from new threads and children (new tids), after an fd number was reused
#: for another file, on a bad fd and the working directory. Prints the mismatches with what
#: a path stat (through the broker) says, or "same".
FSTAT_PROBE = textwrap.dedent("""
    import ctypes, errno, os, struct, sys, threading
    work = sys.argv[1]
    names = [f"{work}/ok.txt", f"{work}/sub", f"{work}/made-{os.getpid()}.txt"]
    open(names[2], "w").close()
    wrong = []

    def check(label, fd, path):
        got, want = os.fstat(fd), os.stat(path)
        if (got.st_dev, got.st_ino, got.st_mode) != (want.st_dev, want.st_ino, want.st_mode):
            wrong.append(label)

    def run_thread(i):
        fd = os.open(names[i % 3], os.O_RDONLY)
        check(f"thread {i}", fd, names[i % 3])
        os.close(fd)

    for i in range(30):
        t = threading.Thread(target=run_thread, args=(i,))
        t.start()
        t.join()
    fd = os.open(names[0], os.O_RDONLY)
    check("main", fd, names[0])
    os.dup2(os.open(names[1], os.O_RDONLY), fd)  # the same number, another file
    check("reused fd number", fd, names[1])
    for i in range(10):
        pid = os.fork()
        if pid == 0:
            check(f"child {i}", fd, names[1])
            os.dup2(os.open(names[2], os.O_RDONLY), fd)  # the parent's fd stays on names[1]
            check(f"child {i}, its own file", fd, names[2])
            os._exit(1 if wrong else 0)
        if os.waitpid(pid, 0)[1] != 0:
            wrong.append(f"child {i}")
    os.chdir(f"{work}/sub")
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    check("working directory", cwd, f"{work}/sub")
    st = ctypes.create_string_buffer(256)  # newfstatat(AT_FDCWD, "", st, AT_EMPTY_PATH), x86_64
    if ctypes.CDLL(None).syscall(262, -100, b"", st, 0x1000) != 0 or \
            struct.unpack_from("QQ", st) != (os.stat(".").st_dev, os.stat(".").st_ino):
        wrong.append("AT_FDCWD")
    try:
        os.fstat(999)
        wrong.append("bad fd")
    except OSError as e:
        if e.errno != errno.EBADF:
            wrong.append(f"bad fd: {e.errno}")
    print(" ".join(wrong) or "same")
""")


def test_fstat_answers_for_the_fd_the_caller_holds(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """The supervisor answers fstat from the caller's own fd, whatever thread or process asks."""
    script = shared_dir / "fstat_probe.py"
    script.write_text(FSTAT_PROBE)
    work = _work(shared_dir)
    done = as_user.run(["--ro", str(script), "--rw", str(work), "--deny", "**/*.secret", "--",
                        INSIDE_PYTHON, str(script), str(work)])
    assert (done.returncode, done.stdout.strip()) == (0, "same"), done.stderr


BROKER_PROBE = textwrap.dedent("""
    import os, sys
    token = open(sys.argv[1], "rb").read().strip()  # not on a command line: the init keeps viewbox's
    found = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
        for name in ("environ", "cmdline"):
            try:
                if token in open(f"/proc/{pid}/{name}", "rb").read():
                    found.append(f"{pid}/{name}")
            except OSError:
                pass
        try:  # the memory, where the maps say it is
            maps = open(f"/proc/{pid}/maps").read().splitlines()
            with open(f"/proc/{pid}/mem", "rb") as mem:
                for line in maps:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    if "[stack]" in line or hi - lo <= 1 << 20:
                        try:
                            if token in os.pread(mem.fileno(), hi - lo, lo):
                                found.append(f"{pid}/mem")
                                break
                        except (OSError, OverflowError):  # unreadable, or above the signed offsets
                            pass
        except OSError:
            pass
    print(" ".join(found) or "none")
""")


def test_the_broker_gives_nothing_of_the_host_away(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """The broker is a copy of the viewbox process: its memory and environment are the host's.
    Nothing inside may read them, neither directly nor by asking the broker to open them."""
    token = "vbsecret-" + os.urandom(8).hex()
    script = shared_dir / "probe.py"
    script.write_text(BROKER_PROBE)
    token_file = shared_dir / "token"
    token_file.write_text(token)
    # natively, the probe finds the token in a sibling process of the same user: it works
    sibling = f"VB_HOST_TOKEN={token} sleep 5 & sleep 0.2; {INSIDE_PYTHON} {script} {token_file}; kill $!"
    native = as_user.native(["sh", "-c", sibling])
    assert "environ" in native.stdout and "mem" in native.stdout, native.stdout + native.stderr
    env = {**as_user.viewbox_env(None), "VB_HOST_TOKEN": token}  # viewbox's own environment
    done = as_user.run(["--ro", str(shared_dir), "--deny", "**/*.secret", "--",
                        INSIDE_PYTHON, str(script), str(token_file)], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_exec_rule_race_is_caught_after_the_fact(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """execve cannot be emulated: a thread flipping the path may win between the check and
    the exec. What then ran is verified at its next call and killed before it gets far."""
    binary = shared_dir / "exec_race"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(ATTACKS / "exec_race.c")], check=True)
    bins = shared_dir / "bins"
    bins.mkdir(mode=0o755)
    shutil.copy("/bin/true", bins / "allowed")
    shutil.copy("/bin/echo", bins / "denied")  # prints its argument, if it gets that far
    native = as_user.native([str(binary), "2", str(bins / "allowed"), str(bins / "denied")])
    assert "DENIED-PROGRAM-RAN" in native.stdout, "natively the race must run the denied program"
    done = as_user.run(["--ro", str(shared_dir), "--deny", "exec:**/bins/denied", "--",
                        str(binary), "5", str(bins / "allowed"), str(bins / "denied")], timeout=60)
    assert done.returncode == 0, done.stderr
    assert "DENIED-PROGRAM-RAN" not in done.stdout
    assert int(done.stderr.split("children=")[1].split()[0]) > 20  # the race really ran
