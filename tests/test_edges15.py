"""Interposition edges (issue 15, part 1): scripts under exec rules, DNS pinning
and a bounded resolver, the sandbox's hostname, unix sockets under path
rules, and learn granting only what was used."""
from __future__ import annotations

import contextlib
import errno
import json
import pathlib
import shutil
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from conftest import ATTACKS, INSIDE_PYTHON, Caller, stop
from test_net import BY_NAME, CountingServer, ServerNamespace, py

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


# --- the resolver: what a name may be pinned to ------------------------------------------------


class Zone:
    """A hostile DNS server of the test's own on the host's loopback (UDP): `records` maps a
    name asked to the records answered, (owner, type, value) each; other names get NXDOMAIN.
    With `silent`, it reads queries and never answers."""

    def __init__(self, records: dict[str, list[tuple[str, str, str]]], silent: bool = False) -> None:
        self.records = records
        self.silent = silent
        self.asked = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset

        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            self.asked += 1
            if self.silent:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True)
            if name not in self.records:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            for owner, kind, value in self.records.get(name, ()):
                if kind == "CNAME" or dns.rdatatype.from_text(kind) == question.rdtype:
                    reply.answer.append(dns.rrset.from_text(owner + ".", 60, "IN", kind, value))
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


def host_address() -> str:
    """The host's own IPv4 address on its way out (eth0's here), not a loopback one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("1.1.1.1", 9))  # routes only: nothing is sent
            return str(probe.getsockname()[0])
    except OSError:
        from pyroute2 import IPRoute

        with IPRoute() as host:
            return next(str(a.get_attr("IFA_ADDRESS")) for a in host.get_addr(family=socket.AF_INET)
                        if not str(a.get_attr("IFA_ADDRESS")).startswith("127."))


@pytest.fixture
def test_namespace() -> Iterator[ServerNamespace]:
    namespace = ServerNamespace()
    yield namespace
    namespace.close()


def test_rebinding_to_any_host_address_link_local_or_loopback_pins_nothing(
        as_user: Caller, shared_dir: pathlib.Path, test_namespace: ServerNamespace) -> None:
    """Attack: DNS rebinding. A hostile upstream points allowed names at the host's eth0
    address, at its end of a link, at cloud metadata, at ::1, and slips in records owned by
    names nobody asked for. Even with the host's networks named by address (for another port),
    only the honest answer is pinned; natively the host's addresses are a way in."""
    own, port = host_address(), test_namespace.port
    host_server = CountingServer("0.0.0.0", port)
    host_six = socket.create_server(("::1", port), family=socket.AF_INET6)  # what ::1 would reach
    zone = Zone({
        "own.test": [("own.test", "A", own)],
        "link.test": [("link.test", "A", test_namespace.host_address)],
        "meta.test": [("meta.test", "A", "169.254.169.254"), ("meta.test", "AAAA", "fe80::1")],
        "six.test": [("six.test", "AAAA", "::1")],
        # an honest CNAME chain, then records of names nobody asked about
        "chain.test": [("chain.test", "CNAME", "real.test."), ("real.test", "A", test_namespace.address),
                       ("other.test", "A", "9.9.9.9"), ("chain.test.evil", "A", "9.9.9.10")],
    })
    audit = shared_dir / "audit.jsonl"
    names = ["own.test", "link.test", "meta.test", "six.test", "chain.test"]
    native = as_user.native([INSIDE_PYTHON, "-c", BY_NAME, str(port), "0", own, test_namespace.host_address])
    assert set(json.loads(native.stdout).values()) == {"hello from the host\n"}, native.stdout
    reached_natively = host_server.accepted
    rules = [arg for name in names for arg in ("--allow-net", f"{name}:{port}")]
    try:
        done = as_user.run(["--audit", str(audit), *rules, "--dns", zone.address,
                            # the host's networks and the namespace's, named by address for port 1 only
                            "--allow-net", f"{own.rsplit('.', 1)[0]}.0/24:1", "--allow-net", f"{test_namespace.network}:1",
                            *py(BY_NAME), str(port), "0", *names, "9.9.9.9", "9.9.9.10"])
    finally:
        zone.close()
        host_server.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "own.test": "unresolved", "link.test": "unresolved", "meta.test": "unresolved",
        "six.test": errno.ECONNREFUSED,  # the sandbox's own loopback: nothing listens there
        "chain.test": f"hello {test_namespace.host_address}\n",
        "9.9.9.9": errno.EACCES, "9.9.9.10": errno.EACCES,
    }
    assert host_server.accepted == reached_natively
    host_six.setblocking(False)
    with pytest.raises(BlockingIOError):
        host_six.accept()
    host_six.close()
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    given = {(e["name"], e["type"]): e["addresses"] for e in events if e["event"] == "dns"}
    assert given[("own.test", "A")] == given[("link.test", "A")] == given[("meta.test", "A")] == []
    assert given[("meta.test", "AAAA")] == []
    assert given[("chain.test", "A")] == [test_namespace.address]
    refused = {r for e in events if e["event"] == "dns" for r in e.get("refused", ())}
    assert {f"{own}: one of the host's own addresses", "169.254.169.254: a link-local address",
            f"{test_namespace.host_address}: one of the host's own addresses",
            "fe80::1: a link-local address"} <= refused
    assert f"viewbox: {own} for own.test not allowed: one of the host's own addresses" in done.stderr


def test_private_addresses_are_pinned_only_under_an_address_rule(
        as_user: Caller, test_namespace: ServerNamespace) -> None:
    """A name answered with a private address reaches it only when a rule names that network by
    address (here for another port): otherwise a name could lead into the host's LAN."""
    port = test_namespace.port
    zone = Zone({"lan.test": [("lan.test", "A", test_namespace.address)]})
    try:
        runs = [as_user.run(["--allow-net", f"lan.test:{port}", "--dns", zone.address, *extra,
                             *py(BY_NAME), str(port), "0", "lan.test", test_namespace.address])
                for extra in ([], ["--allow-net", f"{test_namespace.network}:1"])]
    finally:
        zone.close()
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert json.loads(runs[0].stdout) == {"lan.test": "unresolved", test_namespace.address: errno.EACCES}
    assert "not globally routable, and no [net].allow address rule covers it" in runs[0].stderr
    assert json.loads(runs[1].stdout) == {"lan.test": f"hello {test_namespace.host_address}\n",
                                          test_namespace.address: f"hello {test_namespace.host_address}\n"}


# --- the sandbox's own hostname -----------------------------------------------------------


def test_the_sandboxs_hostname_resolves_inside(as_user: Caller, world_dir: pathlib.Path) -> None:
    """gethostbyname(gethostname()) and `hostname -f` work, for the default name and a policy's,
    in the sandbox's own network (to its own loopback) and with the host's /etc/hosts kept."""
    probe = ("import socket; name = socket.gethostname(); "
             "print(name, socket.gethostbyname(name), socket.gethostbyname('localhost'))")
    default = as_user.run(["--", INSIDE_PYTHON, "-c", probe])
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["viewbox", "127.0.1.1", "127.0.0.1"]
    policy = world_dir / "named.toml"
    policy.write_text('[viewbox]\nversion = 1\nextends = ["default"]\n[identity]\nhostname = "build-7.example"\n')
    named = as_user.run(["--policy", str(policy), "--", "sh", "-c", "hostname -f && getent hosts build-7.example"])
    assert named.returncode == 0, named.stderr
    assert named.stdout.split() == ["build-7.example", "127.0.1.1", "build-7.example"]
    # the sandbox's name reaches the sandbox: a server on its loopback answers to it
    serve = ("import socket; s = socket.create_server(('127.0.1.1', 0)); "
             "c = socket.create_connection((socket.gethostname(), s.getsockname()[1])); "
             "s.accept(); print('connected')")
    done = as_user.run(["--", INSIDE_PYTHON, "-c", serve])
    assert done.returncode == 0 and done.stdout.strip() == "connected", done.stderr


# --- the resolver stays bounded on the host's side ------------------------------------------------

# Sends DNS queries to the sandbox's resolver as fast as it can for SECONDS (after a pause
# in which the test reads viewbox's memory), for one name and for ever new names, reading
# whatever answers come back; prints how many it sent and how many were answered.
FLOOD = textwrap.dedent("""
    import socket, struct, sys, time
    seconds, pause = float(sys.argv[1]), float(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.53", 53))
    s.setblocking(False)
    def query(n, name):
        labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
        return struct.pack(">HHHHHH", n & 0xFFFF, 0x0100, 1, 0, 0, 0) + labels + struct.pack(">HH", 1, 1)
    print("ready", flush=True)
    time.sleep(pause)
    sent = answered = n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        n += 1
        try:
            s.send(query(n, "slow.test" if n % 2 else f"q{n}.slow.test"))
            sent += 1
        except BlockingIOError:
            time.sleep(0.0001)
        try:
            while s.recv(512):
                answered += 1
        except BlockingIOError:
            pass
    print(sent, answered, flush=True)
""")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])


def test_a_query_flood_keeps_the_resolver_bounded(as_user: Caller) -> None:
    """Attack: 10 s of queries for names whose upstream never answers. viewbox's own memory
    stays within 20 MB of what it was; queries past the rate are dropped and counted."""
    zone = Zone({}, silent=True)
    proc = as_user.popen(["run", "--allow-net", "slow.test:80", "--allow-net", "*.slow.test:80",
                          "--dns", zone.address, "--", INSIDE_PYTHON, "-c", FLOOD, "10", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        start = rss_kib(proc.pid)
        peak = start
        while proc.poll() is None:
            with contextlib.suppress(OSError, StopIteration):
                peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.1)
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
        zone.close()
    assert proc.returncode == 0, err
    sent, answered = map(int, out.split())
    assert sent > 20000, out  # a flood indeed
    assert peak - start < 20 * 1024, f"viewbox grew from {start} KiB to {peak} KiB"
    assert answered < sent  # the rest were dropped
    assert "viewbox: DNS queries dropped: over 100/s or 64 pending" in err
    assert zone.asked > 0  # the lookups it did make went upstream


# --- unix sockets under path rules --------------------------------------------------------

# Connects to and binds path-named unix sockets in DIR (absolutely and relatively), and an
# abstract one; prints what each got (the server's word, the new socket's mode, or errno).
UNIX_PROBE = textwrap.dedent("""
    import json, os, socket, sys
    d = sys.argv[1]
    out = {}
    def attempt(what, fn):
        try:
            out[what] = fn()
        except OSError as e:
            out[what] = e.errno
    def connect(path):
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        return c.recv(16).decode()
    def bind(path):
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        return oct(os.stat(path).st_mode & 0o777)
    attempt("connect api.secret", lambda: connect(f"{d}/api.secret"))
    attempt("connect ok.sock", lambda: connect(f"{d}/ok.sock"))
    attempt("bind new.secret", lambda: bind(f"{d}/new.secret"))
    attempt("bind new.sock", lambda: bind(f"{d}/new.sock"))
    os.chdir(d)
    attempt("connect relative api.secret", lambda: connect("api.secret"))
    attempt("connect relative ok.sock", lambda: connect("ok.sock"))
    name = f"\\0viewbox-test-{os.getpid()}"
    a = socket.socket(socket.AF_UNIX)
    attempt("bind abstract", lambda: a.bind(name) or "bound")
    a.listen()
    attempt("connect abstract", lambda: socket.socket(socket.AF_UNIX).connect(name) or "connected")
    tcp = socket.socket()
    attempt("bind tcp", lambda: tcp.bind(("127.0.0.1", 0)) or "bound")
    tcp.listen()
    attempt("connect tcp", lambda: socket.create_connection(tcp.getsockname()) and "connected")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    attempt("connect tcp refused", lambda: socket.create_connection(closed.getsockname()))
    quick = socket.socket()
    quick.setblocking(False)
    attempt("connect tcp non-blocking", lambda: quick.connect_ex(tcp.getsockname()) in (0, 115) and "started")
    print(json.dumps(out))
""")


def test_unix_sockets_are_decided_by_path_rules(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """Attack: a socket named api.secret under --deny '**/*.secret' is a way to what it serves
    (natively reachable); connect and bind follow the rules, other sockets work as natively."""
    servers = []
    for name, word in (("api.secret", b"SECRET"), ("ok.sock", b"hello")):
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(shared_dir / name))
        (shared_dir / name).chmod(0o777)
        server.listen(16)
        servers.append(server)

        def serve(server: socket.socket = server, word: bytes = word) -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                conn.sendall(word)
                conn.close()
        threading.Thread(target=serve, daemon=True).start()
    probe = shared_dir / "probe.py"
    probe.write_text(UNIX_PROBE)
    try:
        native = as_user.native([INSIDE_PYTHON, str(probe), str(shared_dir)])
        assert json.loads(native.stdout)["connect api.secret"] == "SECRET", native.stdout + native.stderr
        for made in ("new.secret", "new.sock"):
            (shared_dir / made).unlink()
        done = as_user.run(["--rw", str(shared_dir), "--deny", "**/*.secret", "--", INSIDE_PYTHON, str(probe),
                            str(shared_dir)])
    finally:
        for server in servers:
            server.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "connect api.secret": errno.EACCES, "connect ok.sock": "hello",
        "bind new.secret": errno.EACCES, "bind new.sock": json.loads(native.stdout)["bind new.sock"],
        "connect relative api.secret": errno.EACCES, "connect relative ok.sock": "hello",
        "bind abstract": "bound", "connect abstract": "connected", "bind tcp": "bound",
        "connect tcp": "connected", "connect tcp refused": errno.ECONNREFUSED, "connect tcp non-blocking": "started",
    }
    assert not (shared_dir / "new.secret").exists()


def _serve_unix(path: pathlib.Path, word: bytes) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.sendall(word)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return server


def test_unix_socket_path_race_never_reaches_a_denied_socket(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """Attack: a thread flips the sockaddr's path between an allowed and a denied socket while
    another connects in a loop. Natively both answer; under the rule the denied one never does."""
    binary = shared_dir / "unix_race"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(ATTACKS / "unix_race.c")], check=True)
    servers = [_serve_unix(shared_dir / "ok.sock", b"hello"), _serve_unix(shared_dir / "api.secret", b"SECRET")]
    try:
        args = [str(shared_dir / "ok.sock"), str(shared_dir / "api.secret")]
        native = as_user.native([str(binary), "2", *args])
        counts = dict(item.split("=") for item in native.stdout.split())
        assert int(counts["denied"]) > 0, native.stdout
        done = as_user.run(["--ro", str(shared_dir), "--deny", "**/*.secret", "--", str(binary), "5", *args],
                           timeout=60)
    finally:
        for server in servers:
            server.close()
    assert done.returncode == 0, done.stderr
    counts = dict(item.split("=") for item in done.stdout.split())
    assert int(counts["denied"]) == 0 and int(counts["allowed"]) > 20, done.stdout


# --- learn grants only what the run used ----------------------------------------------------


def _learn_base(directory: pathlib.Path) -> pathlib.Path:
    base = directory / "base.toml"
    base.write_text(f'[viewbox]\nversion = 1\nextends = ["default"]\n\n[fs]\nrw = ["{directory}"]\n')
    return base


def test_learn_shows_the_files_read_not_their_directory(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """Reading four files of a directory learns those four files: the directory's .ssh/ and
    its other files stay out of the learned view (they were in it, whole)."""
    home = shared_dir / "home"
    (home / ".ssh").mkdir(parents=True)
    for path in (home, home / ".ssh"):
        path.chmod(0o755)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / "untouched.txt").write_text("never read\n")
    files = [home / f"part{i}.txt" for i in range(5)]
    for index, path in enumerate(files):
        path.write_text(f"{index}\n")
    learned = shared_dir / "learned.toml"
    done = as_user.cli(["learn", "-o", str(learned), "--policy", str(_learn_base(shared_dir)), "--",
                        "cat", *map(str, files)])
    assert done.returncode == 0, done.stderr
    text = learned.read_text()
    assert f'"{home}"' not in text and ".ssh" not in text, text
    replay = as_user.run(["--policy", str(learned), "--", "cat", *map(str, files)])
    assert (replay.returncode, replay.stdout) == (0, "0\n1\n2\n3\n4\n"), replay.stderr + text
    peek = as_user.run(["--policy", str(learned), "--", "cat", str(home / ".ssh" / "id_ed25519"),
                        str(home / "untouched.txt")])
    assert peek.returncode == 1 and "PRIVATE KEY" not in peek.stdout and "never read" not in peek.stdout


README_JOB = textwrap.dedent("""
    import os, sys
    source, out = sys.argv[1:]
    os.makedirs(out, exist_ok=True)
    with open(source) as f, open(os.path.join(out, "result.csv"), "w") as g:
        g.write(f.read().upper())
""")


def test_learn_readmes_example_replays_after_its_output_is_removed(as_user: Caller, shared_dir: pathlib.Path) -> None:
    """`python3 job.py in.csv out/`, out/ made by the job: the learned policy replays it once
    out/ is gone (it named out/ itself, which replay could not bind). The job's directory is
    writable for that, and what else was in it stays out of sight (.ssh/ was shown whole)."""
    job = shared_dir / "job"
    job.mkdir(mode=0o777)
    job.chmod(0o777)
    (job / ".ssh").mkdir(mode=0o755)
    (job / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (job / "job.py").write_text(README_JOB)
    (job / "in.csv").write_text("a,b\n1,2\n")
    learned = shared_dir / "job.toml"
    command = ["sh", "-c", f"cd {job} && {INSIDE_PYTHON} job.py in.csv out/"]
    done = as_user.cli(["learn", "-o", str(learned), "--policy", str(_learn_base(shared_dir)), "--", *command])
    assert done.returncode == 0, done.stderr
    assert (job / "out" / "result.csv").read_text() == "A,B\n1,2\n"
    shutil.rmtree(job / "out")
    replay = as_user.run(["--policy", str(learned), "--", *command])
    assert replay.returncode == 0, replay.stderr + learned.read_text()
    assert (job / "out" / "result.csv").read_text() == "A,B\n1,2\n"
    peek = as_user.run(["--policy", str(learned), "--", INSIDE_PYTHON, "-c",
                        f"import os; print(os.listdir({str(job / '.ssh')!r}))"])
    assert (peek.returncode, peek.stdout) == (0, "[]\n"), peek.stderr
