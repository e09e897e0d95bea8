"""The network view: mode none against a server in a namespace the test made, sockets passed in
([net].listen), published ports ([net].publish), mode private (root), and the policy schema.

Every connection goes to loopback or to a network namespace this file creates; every wait is
bounded in time.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import pathlib
import random
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import INSIDE_PYTHON, Caller, live_processes, stop, wait_until
from viewbox.errors import PolicyError, UnavailableLayer
from viewbox.policy import load_policy

def py(code: str) -> list[str]:
    return ["--", INSIDE_PYTHON, "-c", code]


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's choice, released at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def fetch(url: str, timeout: float = 10.0) -> bytes:
    """GET `url`, retrying while the daemon behind it starts (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body: bytes = response.read()
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False  # reset or timed out: the listener is still going away
    return False


# --- a network namespace of the test's own, with a server in it ------------------------------------

# Runs in a network namespace of its own: the namespace lives as long as this process, and no
# name for it is made under /run/netns. The host moves eth0 in, then says "go" on stdin.
NAMESPACE_SERVER = textwrap.dedent("""
    import ctypes, socket, sys
    from pyroute2 import IPRoute
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "unshare")
    print("unshared", flush=True)
    host_address, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert sys.stdin.readline() == "go\\n"
    with IPRoute() as inside:
        inside.link("set", index=inside.link_lookup(ifname="lo")[0], state="up")
        eth0 = inside.link_lookup(ifname="eth0")[0]
        inside.addr("add", index=eth0, address=address, prefixlen=30)
        inside.link("set", index=eth0, state="up")
        inside.route("add", dst="default", gateway=host_address)
    server = socket.create_server((address, port))
    print("ready", flush=True)
    while True:
        conn, peer = server.accept()
        conn.sendall(f"hello {peer[0]}\\n".encode())
        conn.close()
""")


def free_link_network() -> ipaddress.IPv4Network:
    """A /30 of 10.201.0.0/16 (apart from viewbox's private range, 10.200.0.0/16) that no address
    of the host's is in. The search starts at one drawn from this process's pid, so two runs of
    the suite at once (neighbouring pids) start far apart and take different ones."""
    from pyroute2 import IPRoute

    with IPRoute() as host:
        used = {ipaddress.ip_address(str(a.get_attr("IFA_ADDRESS"))) for a in host.get_addr(family=socket.AF_INET)}
    subnets = list(ipaddress.IPv4Network("10.201.0.0/16").subnets(new_prefix=30))
    first = random.Random(os.getpid()).randrange(len(subnets))
    for subnet in subnets[first:] + subnets[:first]:
        if not any(address in subnet for address in used):
            return subnet
    raise AssertionError("no free /30 in 10.201.0.0/16")


class ServerNamespace:
    """A network namespace linked to the host by a veth pair (host .1, namespace .2), with a TCP
    server on .2:PORT that greets each client with the address it saw. The namespace is the
    server process's own and its /30 one no other test holds: safe to run twice at once."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self.host_if = f"vbt{uuid.uuid4().hex[:8]}"
        self.network = free_link_network()
        host, inside = list(self.network.hosts())
        # a port free on the host too: tests listen on the host's end of the link with the same port
        self.host_address, self.address, self.port = str(host), str(inside), free_port()
        self.server = subprocess.Popen(
            [sys.executable, "-c", NAMESPACE_SERVER, self.host_address, self.address, str(self.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert self.server.stdin is not None and self.server.stdout is not None
            assert self.server.stdout.readline() == "unshared\n"
            with IPRoute() as host_side:
                host_side.link("add", ifname=self.host_if, kind="veth",
                               peer={"ifname": "eth0", "net_ns_pid": self.server.pid})
                index = host_side.link_lookup(ifname=self.host_if)[0]
                host_side.addr("add", index=index, address=self.host_address, prefixlen=30)
                host_side.link("set", index=index, state="up")
            self.server.stdin.write("go\n")
            self.server.stdin.flush()
            assert self.server.stdout.readline() == "ready\n"
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        from pyroute2 import IPRoute, NetlinkError

        stop(self.server)  # the namespace ends with it, and the veth pair with the namespace
        with IPRoute() as host:
            for index in host.link_lookup(ifname=self.host_if):
                with contextlib.suppress(NetlinkError):  # gone with its peer meanwhile
                    host.link("del", index=index)


@pytest.fixture
def test_namespace() -> Iterator[ServerNamespace]:
    namespace = ServerNamespace()
    yield namespace
    namespace.close()


def nat_tables() -> list[str]:
    from pyroute2.nftables.main import NFTables

    nft = NFTables(nfgen_family=socket.AF_INET)
    try:
        return sorted(str(table.get_attr("NFTA_TABLE_NAME")) for table in nft.get_tables())
    finally:
        nft.close()


def owner(name: str) -> int | None:
    """The pid of the viewbox process a private network's leftover is named after (its veth
    "vbh<pid>-<n>", its nftables table and named namespace "viewbox-<pid>-<n>"), else None."""
    for prefix in ("viewbox-", "vbh"):
        pid, _, number = name.removeprefix(prefix).partition("-")
        if name.startswith(prefix) and pid.isdigit() and number.isdigit():
            return int(pid)
    return None


def made_by(pid: int) -> dict[str, list[str]]:
    """What a private network of viewbox process `pid` has in the host's network now. Only its
    own: other runs of the suite may make and remove theirs meanwhile."""
    from pyroute2 import IPRoute, netns

    with IPRoute() as host:
        links = [str(link.get_attr("IFLA_IFNAME")) for link in host.get_links()]
    state = {"links": links, "netns": netns.listnetns(), "nat": nat_tables()}
    return {kind: sorted(name for name in names if owner(name) == pid) for kind, names in state.items()}


NOTHING: dict[str, list[str]] = {"links": [], "netns": [], "nat": []}


def forwarding() -> str:
    with open("/proc/sys/net/ipv4/ip_forward") as knob:
        return knob.read().strip()


def host_forwarding() -> str | None:
    """The host's own IPv4 forwarding setting, which a private run leaves as it found it when it
    ends; None while another viewbox's private network, or what a killed one left, is there (that
    one turned forwarding on, and only the last to end, or the next to sweep, turns it off)."""
    from pyroute2 import IPRoute

    with IPRoute() as host:
        links = [str(link.get_attr("IFLA_IFNAME")) for link in host.get_links()]
    if any(owner(name) is not None for name in [*links, *nat_tables()]):
        return None
    return forwarding()


@pytest.fixture
def private_network_lock() -> Iterator[None]:
    """Held by every test that makes a private network. Such networks turn the host's IPv4
    forwarding on while any of them runs and off after the last, and the next one removes what a
    killed run left: machine-wide effects the tests check, so another run of the suite at once
    must not make or sweep private networks meanwhile."""
    fd = os.open("/tmp/viewbox-tests-private-network.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


CONNECT = textwrap.dedent("""
    import json, socket, sys
    out = {}
    for target in sys.argv[1:]:
        host, port = target.rsplit(":", 1)
        try:
            conn = socket.create_connection((host, int(port)), timeout=5)
            out[target] = conn.recv(100).decode()
            conn.close()
        except OSError as e:
            out[target] = e.errno
    print(json.dumps(out))
""")


# --- 1. mode none ------------------------------------------------------------------------------------

def test_none_cannot_reach_a_server_in_another_namespace(as_user: Caller, test_namespace: ServerNamespace) -> None:
    target = f"{test_namespace.address}:{test_namespace.port}"
    native = as_user.native([INSIDE_PYTHON, "-c", CONNECT, target])
    assert json.loads(native.stdout)[target] == f"hello {test_namespace.host_address}\n"  # reachable natively

    done = as_user.run(py(CONNECT) + [target])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[target] == errno.ENETUNREACH


# --- 2. listen: sockets bound on the host, passed in systemd's way -----------------------------------

# A socket-activated daemon as systemd's sd_listen_fds() sees it: it takes the sockets only when
# LISTEN_PID is its own pid, and names them from LISTEN_FDNAMES.
SOCKET_ACTIVATED = textwrap.dedent("""
    import os, socket, sys, threading
    assert os.environ["LISTEN_PID"] == str(os.getpid()), (os.environ["LISTEN_PID"], os.getpid())
    count = int(os.environ["LISTEN_FDS"])
    names = os.environ["LISTEN_FDNAMES"].split(":")
    print("names", names, "fds", count, flush=True)
    def serve(fd, name):
        server = socket.socket(fileno=fd)
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        served = 0
        while served < int(sys.argv[1]):
            conn, _ = server.accept()
            data = conn.makefile("rb").readline()
            conn.sendall(name.encode() + b" " + data)
            conn.close()
            served += 1
    threads = [threading.Thread(target=serve, args=(3 + i, names[i])) for i in range(count)]
    for t in threads: t.start()
    for t in threads: t.join()
""")


def ask(address: Any, family: int = socket.AF_INET, line: bytes = b"hi\n") -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(address)
        conn.sendall(line)
        return b"".join(iter(lambda: conn.recv(4096), b""))


def test_listen_passes_tcp_and_unix_sockets_to_a_socket_activated_daemon(
        as_user: Caller, shared_dir: pathlib.Path) -> None:
    port = free_port()
    path = shared_dir / "app.sock"
    proc = as_user.popen(["run", "--listen", f"web=tcp:127.0.0.1:{port}", "--listen", f"unix:{path}",
                          *py(SOCKET_ACTIVATED), "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # bound before the command starts: a client may connect at once (the backlog holds it)
        assert wait_until(path.exists, 10)
        assert ask(("127.0.0.1", port)) == b"web hi\n"
        assert ask(str(path), socket.AF_UNIX, b"there\n") == b"unix-app.sock there\n"
        assert ask(("127.0.0.1", port), line=b"again\n") == b"web again\n"
        assert ask(str(path), socket.AF_UNIX) == b"unix-app.sock hi\n"
        out, err = proc.communicate(timeout=20)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert "names ['web', 'unix-app.sock'] fds 2" in out
    assert not path.exists()  # the socket file goes with the run
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_listen_refuses_a_port_it_cannot_bind(as_user: Caller) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = as_user.run(["--listen", f"tcp:127.0.0.1:{port}", "--", "true"])
    assert done.returncode == 125
    assert done.stderr == f"viewbox: bind [net].listen[0] tcp:127.0.0.1:{port}: Address already in use\n"


def test_listen_without_listen_fds_leaks_no_variables(as_user: Caller) -> None:
    done = as_user.run(["--env", "LISTEN_FDS=7", "--", "env"])
    assert done.returncode == 0, done.stderr
    assert "LISTEN_PID" not in done.stdout and "LISTEN_FDNAMES" not in done.stdout


# --- 3. publish: host ports forwarded to ports inside -----------------------------------------------

def test_publish_serves_python_http_server(as_user: Caller, world_dir: pathlib.Path) -> None:
    (world_dir / "hello.txt").write_text("hello through publish\n")
    (world_dir / "hello.txt").chmod(0o644)
    port = free_port()
    proc = as_user.popen(["run", "--ro", str(world_dir), "--publish", f"127.0.0.1:{port}:8000", "--",
                          INSIDE_PYTHON, "-m", "http.server", "-d", str(world_dir), "-b", "127.0.0.1", "8000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert fetch(f"http://127.0.0.1:{port}/hello.txt") == b"hello through publish\n"
    finally:
        stop(proc)
    # the forwarder and its host socket end with the sandbox (killed: as the kernel gets to it)
    assert wait_until(lambda: refused(port), 10)


NGINX_CONF = """
daemon off;
user root root;
master_process off;
pid {dir}/nginx.pid;
error_log stderr error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def test_publish_serves_nginx(as_user: Caller, world_dir: pathlib.Path) -> None:
    if not shutil.which("nginx", path="/usr/sbin:/usr/bin"):
        pytest.skip("nginx is not installed (Debian: nginx-light)")
    (world_dir / "index.html").write_text("<p>nginx inside viewbox</p>\n")
    (world_dir / "index.html").chmod(0o644)
    (world_dir / "nginx.conf").write_text(NGINX_CONF.format(dir="/tmp", port=8080, root=world_dir))
    (world_dir / "nginx.conf").chmod(0o644)
    port = free_port()
    proc = as_user.popen(["run", "--ro", str(world_dir), "--publish", f"127.0.0.1:{port}:8080", "--",
                          "nginx", "-e", "stderr", "-c", str(world_dir / "nginx.conf")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert fetch(f"http://127.0.0.1:{port}/") == b"<p>nginx inside viewbox</p>\n"
    finally:
        stop(proc)
        assert proc.stderr is not None
        errors = proc.stderr.read()
    assert "emerg" not in errors, errors


# Echoes every connection's bytes back after the client's FIN, then closes: a half-closed
# connection must keep working through the forwarder.
ECHO_AFTER_EOF = textwrap.dedent("""
    import socket, threading
    server = socket.create_server(("127.0.0.1", 7000), backlog=256)
    def serve(conn):
        data = b"".join(iter(lambda: conn.recv(65536), b""))
        conn.sendall(data)
        conn.close()
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
""")


def wait_for_echo(port: int, timeout: float = 10) -> None:
    """Until the echo daemon answers through the published port: viewbox binds it as it starts,
    and the forwarder closes clients while nothing listens inside yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"up?")
                conn.shutdown(socket.SHUT_WR)
                if conn.recv(100) == b"up?":
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the daemon never answered"
        time.sleep(0.1)


def test_publish_holds_up_under_load(as_user: Caller) -> None:
    port = free_port()
    proc = as_user.popen(["run", "--publish", f"127.0.0.1:{port}:7000", *py(ECHO_AFTER_EOF)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def echo(payload: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: conn.recv(1 << 16), b""))

    try:
        wait_for_echo(port)
        big = os.urandom(8 << 20)  # more than the pipes and socket buffers hold: back-pressure
        assert hashlib.sha256(echo(big)).digest() == hashlib.sha256(big).digest()

        results: dict[int, bytes] = {}

        def client(i: int) -> None:
            results[i] = echo(f"client {i} ".encode() * 100)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results) == list(range(200))
        assert all(results[i] == f"client {i} ".encode() * 100 for i in range(200))
    finally:
        stop(proc)


def test_publish_forwarder_holds_no_privilege(as_user: Caller) -> None:
    """The forwarder holds a socket of the host's network: it runs as the command's user,
    without capabilities, not dumpable, so the command can neither take that socket nor read
    or steer the forwarder through /proc."""
    port = free_port()
    code = textwrap.dedent("""
        import json, os
        me = os.getpid()
        out = {}
        for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
            if pid in (1, me):
                continue
            status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
            seen = out[pid] = {"uid": status["Uid"].split()[0], "caps": status["CapEff"].strip()}
            for what in ("environ", "mem", "cmdline"):
                try:
                    seen[what] = len(open(f"/proc/{pid}/{what}", "rb").read(100))
                except OSError as e:
                    seen[what] = e.strerror
            for fd in range(0, 8):
                try:
                    seen[f"fd{fd}"] = os.readlink(f"/proc/{pid}/fd/{fd}")
                    seen[f"open{fd}"] = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY)
                except OSError as e:
                    if e.errno != 2:
                        seen[f"fd{fd}"] = e.strerror
        print(json.dumps(out))
    """)
    done = as_user.run(["--publish", f"127.0.0.1:{port}:80", *py(code)])
    assert done.returncode == 0, done.stderr
    (forwarder,) = json.loads(done.stdout).values()  # and nothing else besides the init and us
    denied = "Permission denied"
    assert forwarder.pop("uid") == str(as_user.uid)
    assert forwarder.pop("caps") == "0000000000000000"
    assert forwarder.pop("environ") == forwarder.pop("mem") == denied
    assert forwarder.pop("cmdline") > 0  # its name only: the init overwrote viewbox's command line
    assert forwarder and set(forwarder.values()) == {denied}  # every fd it has, and none opened


def test_publish_is_refused_with_mode_host(as_user: Caller) -> None:
    done = as_user.run(["--net", "host", "--publish", "8080:80", "--", "true"])
    assert done.returncode != 0
    assert done.stderr == ('viewbox: --publish: publish needs the sandbox\'s own network (mode "none" or '
                           '"private"): with mode "host" the daemon binds the host\'s ports itself\n')


# --- 4. mode private (root) --------------------------------------------------------------------------

def test_private_reaches_a_namespace_through_nat_and_leaves_nothing(
        as_user: Caller, test_namespace: ServerNamespace, private_network_lock: None) -> None:
    target = f"{test_namespace.address}:{test_namespace.port}"
    before = host_forwarding()
    proc = as_user.popen(["run", "--net", "private", *py(CONNECT), target],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    if as_user.uid != 0:
        assert proc.returncode == 125
        assert err.startswith('viewbox: private network unavailable: mode "private" creates a veth pair')
        assert "run as root" in err
    else:
        assert proc.returncode == 0, err
        # the server saw the host's address on its own link: the sandbox's was masqueraded
        assert json.loads(out)[target] == f"hello {test_namespace.host_address}\n"
    assert made_by(proc.pid) == NOTHING
    if before is not None:
        assert forwarding() == before


def test_private_sandbox_cannot_change_its_network(private_network_lock: None) -> None:
    as_user = Caller("root")  # mode private is root's (the refusal to others: the test above)
    code = textwrap.dedent("""
        import fcntl, socket, struct
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        request = struct.pack("16sH14x", b"eth0", 0)
        try:
            fcntl.ioctl(s, 0x8914, request)  # SIOCSIFFLAGS: take eth0 down
            print("changed")
        except OSError as e:
            print(e.errno)
    """)
    done = as_user.run(["--net", "private", *py(code)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(errno.EPERM)


def test_private_with_publish(private_network_lock: None) -> None:
    as_user = Caller("root")  # mode private is root's (the refusal to others: the test above)
    port = free_port()
    before = host_forwarding()
    proc = as_user.popen(["run", "--net", "private", "--publish", f"127.0.0.1:{port}:7000", *py(ECHO_AFTER_EOF)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_echo(port)
        proc.terminate()  # viewbox passes it on, the daemon ends, viewbox cleans up
        proc.wait(timeout=20)
    finally:
        stop(proc)
    assert made_by(proc.pid) == NOTHING
    if before is not None:
        assert forwarding() == before


def test_private_leftovers_of_a_killed_run_are_removed(private_network_lock: None) -> None:
    as_user = Caller("root")  # mode private is root's (the refusal to others: the test above)
    before = host_forwarding()
    proc = as_user.popen(["run", "--net", "private", "--", "sleep", "60"])

    def running() -> bool:
        """Its veth and NAT table are there and its namespace's name gone: the sandbox runs in it."""
        now = made_by(proc.pid)
        return bool(now["links"] and now["nat"]) and not now["netns"]

    try:
        assert wait_until(running, 10)
    finally:
        stop(proc)  # SIGKILL: viewbox cleans nothing up itself
    # the namespace dies with the sandbox, and the veth pair with it; the NAT table stays ...
    assert wait_until(lambda: not made_by(proc.pid)["links"], 10)
    assert made_by(proc.pid)["nat"] and not made_by(proc.pid)["netns"]
    # (IPv4 forwarding too, when viewbox turned it on: nobody was left to turn it off)
    # ... until the next private run, which removes what runs of dead viewbox processes left
    done = as_user.run(["--net", "private", "--", "true"])
    assert done.returncode == 0, done.stderr
    assert made_by(proc.pid) == NOTHING
    if before is not None:
        assert forwarding() == before  # forwarding as it was


# --- 5. the policy schema ----------------------------------------------------------------------------

def write_policy(tmp_path: pathlib.Path, body: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_net_fields_parse_and_render(tmp_path: pathlib.Path) -> None:
    policy = load_policy(write_policy(tmp_path, """
        [viewbox]
        version = 1
        [net]
        mode = "none"
        listen = ["tcp:8080", "admin=tcp:[::1]:9000", "unix:{cwd}/app.sock"]
        publish = ["8081:80", "127.0.0.1:8443:443"]
    """))
    assert [str(sock) for sock in policy.net.listen] == [
        "tcp-8080=tcp:0.0.0.0:8080", "admin=tcp:[::1]:9000", "unix-app.sock=unix:{cwd}/app.sock"]
    assert [str(port) for port in policy.net.publish] == ["0.0.0.0:8081:80", "127.0.0.1:8443:443"]


@pytest.mark.parametrize("line, message", [
    ('listen = ["tcp:localhost:80"]', '[net].listen[0]: address must be an IP address ("0.0.0.0", '
                                      '"127.0.0.1", "[::1]"), got "localhost"'),
    ('listen = ["udp:53"]', '[net].listen[0]: expected "[NAME=]tcp:ADDRESS:PORT" or "[NAME=]unix:PATH", '
                            'got "udp:53"'),
    ('listen = ["tcp:0.0.0.0:70000"]', '[net].listen[0]: port must be a number from 1 to 65535, got "70000"'),
    ('listen = ["unix:run/app.sock"]', '[net].listen[0]: path must be absolute, got "run/app.sock"'),
    ('listen = ["a:b=tcp:80"]', '[net].listen[0]: invalid socket name "a:b" in "a:b=tcp:80"'),
    ('publish = ["8080"]', '[net].publish[0]: expected "[ADDRESS:]HOST_PORT:PORT" (e.g. "8080:80"), got "8080"'),
    ('publish = ["::1:80:80"]', '[net].publish[0]: write an IPv6 address in brackets: "[::1]"'),
    ('mode = "bridge"', '[net].mode: expected "none" or "private" or "host", got "bridge"'),
])
def test_net_field_errors_name_file_and_line(tmp_path: pathlib.Path, line: str, message: str) -> None:
    path = write_policy(tmp_path, f"[viewbox]\nversion = 1\n[net]\n{line}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:4: {message}")


def test_duplicate_listen_names_are_refused(tmp_path: pathlib.Path) -> None:
    import viewbox

    path = write_policy(tmp_path, '[viewbox]\nversion = 1\n[net]\nlisten = ["tcp:127.0.0.1:80", "tcp:[::1]:80"]\n')
    with pytest.raises(PolicyError, match=r":4: \[net\].listen\[1\]: socket name 'tcp-80' is also"):
        viewbox.Sandbox(policy=path).compile(["true"])


def test_allow_entries_parse_and_errors_name_the_place(tmp_path: pathlib.Path) -> None:
    policy = load_policy(write_policy(tmp_path, """
        [net]
        allow = ["10.1.2.0/24:5432", "127.0.0.1:8000-8099", "[::1]:443", "192.0.2.7:*", "PyPI.org.:443",
                 "*.example.com:8000-8080", "*:443"]
        dns = ["127.0.0.1:5353", "10.0.0.53", "[::1]:53"]
    """))
    assert [str(rule) for rule in policy.net.allow] == [
        "10.1.2.0/24:5432", "127.0.0.1:8000-8099", "[::1]:443", "192.0.2.7:*", "pypi.org:443",
        "*.example.com:8000-8080", "*:443"]
    assert policy.net.dns == ("127.0.0.1:5353", "10.0.0.53:53", "[::1]:53")
    for line, message in [
        ('allow = ["*.com:443"]', '"*.com" is too wide: a wildcard needs a domain of two labels or more '
                                  '("*.example.com")'),
        ('allow = ["a.*.example.com:443"]', 'invalid domain name "a.*.example.com": labels of letters, digits '
                                            'and "-", joined by "."; a "*." in front stands for any subdomain, '
                                            '"*" alone for any name'),
        ('allow = ["bad_name.test:443"]', 'invalid domain name "bad_name.test": labels of letters, digits '
                                          'and "-", joined by "."; a "*." in front stands for any subdomain, '
                                          '"*" alone for any name'),
        ('dns = ["resolver.example"]', 'a DNS server is an address ("10.0.0.53", "127.0.0.1:5353"), '
                                       'got "resolver.example"'),
        ('allow = ["10.1.2.3/24:80"]', 'invalid address "10.1.2.3/24" in "10.1.2.3/24:80": 10.1.2.3/24 has host bits set'),
        ('allow = ["10.1.2.3"]', 'expected "ADDRESS[/PREFIX]:PORT" or "NAME:PORT" (e.g. "10.1.2.0/24:5432", '
                                 '"pypi.org:443"), got "10.1.2.3"'),
        ('allow = ["10.1.2.3:90-80"]', 'port range "90-80" ends before it starts'),
    ]:
        path = write_policy(tmp_path, f"[net]\n{line}\n")
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        field = "[net].dns[0]" if line.startswith("dns") else "[net].allow[0]"
        assert str(caught.value) == f"{path}:2: {field}: {message}"


def test_allow_needs_mode_none(tmp_path: pathlib.Path) -> None:
    import viewbox

    path = write_policy(tmp_path, '[net]\nmode = "host"\nallow = ["10.0.0.1:80"]\n')
    with pytest.raises(PolicyError, match=r':3: \[net\].allow\[0\]: allow needs mode "none"'):
        viewbox.Sandbox(policy=path).compile(["true"])


def test_private_refusal_is_clear_for_an_ordinary_user() -> None:
    from viewbox.core import probe_landlock_abi
    from viewbox.policy import compile_policy

    policy = load_policy("default", overrides={"net": "private"})
    with pytest.raises(UnavailableLayer, match='^private network unavailable: mode "private" creates'):
        compile_policy(policy, argv=["true"], cwd="/", host_env={}, landlock_abi=max(0, probe_landlock_abi()),
                       caller_uid=1000, caller_gid=1000)


# --- 6. [net].allow: the egress allowlist ------------------------------------------------------------

class CountingServer:
    """A TCP server on the host's loopback that greets each client and counts them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.create_server((host, port), backlog=512)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._greet, args=(conn,), daemon=True).start()

    @staticmethod
    def _greet(conn: socket.socket) -> None:
        # Greet, then read what the client sends until it closes: closing with unread
        # bytes (curl's request) would reset the connection under the client's feet.
        try:
            conn.settimeout(10)
            conn.sendall(b"hello from the host\n")
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        # shutdown wakes the accept() in progress, which would hold the port bound until it returns
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def server_a() -> Iterator[CountingServer]:
    server = CountingServer()
    yield server
    server.close()


@pytest.fixture
def server_b() -> Iterator[CountingServer]:
    server = CountingServer()
    yield server
    server.close()


# Blocking and non-blocking connects, 64 at once: what each saw, as JSON.
ALLOW_CLIENT = textwrap.dedent("""
    import errno, json, select, socket, sys, threading
    a, b = int(sys.argv[1]), int(sys.argv[2])
    out = {}
    def greet(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                return c.recv(100).decode()
        except OSError as e:
            return e.errno
    out["a"], out["b"] = greet(a), greet(b)
    s = socket.socket()
    s.setblocking(False)
    out["nonblocking_connect"] = s.connect_ex(("127.0.0.1", a))
    poller = select.poll(); poller.register(s, select.POLLOUT)
    out["poll"] = bool(poller.poll(10000))
    out["so_error"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    s.setblocking(True); s.settimeout(10)
    out["nonblocking_recv"] = s.recv(100).decode()
    results = [None] * 64
    def one(i): results[i] = greet(a)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    for t in threads: t.start()
    for t in threads: t.join()
    out["parallel"] = sorted(set(map(str, results)))
    print(json.dumps(out))
""")


def test_allow_reaches_the_allowed_port_only(as_user: Caller, server_a: CountingServer,
                                             server_b: CountingServer) -> None:
    done = as_user.run(["--allow-net", f"127.0.0.1:{server_a.port}",
                        *py(ALLOW_CLIENT), str(server_a.port), str(server_b.port)])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["a"] == "hello from the host\n"
    assert out["b"] == errno.ECONNREFUSED  # the sandbox's own loopback: nothing listens there
    assert out["nonblocking_connect"] in (0, errno.EINPROGRESS)
    assert out["poll"] and out["so_error"] == 0
    assert out["nonblocking_recv"] == "hello from the host\n"
    assert out["parallel"] == ["hello from the host\n"]
    assert server_a.accepted == 1 + 1 + 64
    assert server_b.accepted == 0


def test_allow_with_curl(as_user: Caller, server_a: CountingServer, server_b: CountingServer) -> None:
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    # the server speaks no HTTP: curl reads its line as an HTTP/0.9 answer
    script = (f"curl -s --http0.9 http://127.0.0.1:{server_a.port}/; echo \"a=$?\"; "
              f"curl -s --http0.9 http://127.0.0.1:{server_b.port}/; echo \"b=$?\"")
    done = as_user.run(["--allow-net", f"127.0.0.1:{server_a.port}", "--", "sh", "-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from the host\na=0\nb=7\n"  # 7: could not connect
    assert server_b.accepted == 0


def test_allow_refuses_other_destinations_with_a_note_and_an_event(
        as_user: Caller, shared_dir: pathlib.Path, test_namespace: ServerNamespace) -> None:
    target = f"{test_namespace.address}:{test_namespace.port}"
    audit = shared_dir / "audit.jsonl"
    done = as_user.run(["--audit", str(audit), "--allow-net", "127.0.0.1:1",
                        *py(CONNECT), target, target])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[target] == errno.EACCES
    # said once on stderr, however often it was tried
    assert done.stderr == f"viewbox: denied connect to {target}: not in [net].allow\n"
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    denied = [e for e in events if e["event"] == "syscall" and e["syscall"] == "connect" and e["decision"] == "deny"]
    assert len(denied) == 2
    assert denied[0]["rule"] == "not in [net].allow" and denied[0]["resolved"] == target
    assert denied[0]["args"]["address"] == target and denied[0]["result"] == -errno.EACCES


def test_allow_by_subnet_reaches_a_namespace(as_user: Caller, shared_dir: pathlib.Path,
                                            test_namespace: ServerNamespace) -> None:
    target = f"{test_namespace.address}:{test_namespace.port}"
    audit = shared_dir / "audit.jsonl"
    ports = f"{test_namespace.port - 1}-{test_namespace.port + 1}"
    done = as_user.run(["--audit", str(audit), "--allow-net", f"{test_namespace.network}:{ports}", *py(CONNECT), target])
    assert done.returncode == 0, done.stderr
    # connected from the host: the server saw the host's address on its link
    assert json.loads(done.stdout)[target] == f"hello {test_namespace.host_address}\n"
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    (allowed,) = [e for e in events if e["event"] == "syscall" and e["syscall"] == "connect"]
    assert (allowed["decision"], allowed["rule"], allowed["resolved"]) == ("allow", "--allow-net", target)


UDP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.send(b"ping")
    print(s.recv(100).decode())
""")


def test_allow_udp_through_connect(as_user: Caller) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        port = server.getsockname()[1]

        def answer() -> None:
            data, peer = server.recvfrom(100)
            server.sendto(data + b" pong", peer)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        done = as_user.run(["--allow-net", f"127.0.0.1:{port}", *py(UDP_CLIENT), str(port)])
        thread.join(10)
    assert (done.returncode, done.stdout) == (0, "ping pong\n"), done.stderr


# Connects again and again while a second thread rewrites the sockaddr between the allowed port
# and a denied one: whatever the supervisor read, the host side must only ever see the allowed
# port. Attack: win the race between the supervisor's check and the connect.
TOCTOU = textwrap.dedent("""
    import ctypes, socket, struct, sys, threading, time
    libc = ctypes.CDLL(None, use_errno=True)
    allowed, denied = int(sys.argv[1]), int(sys.argv[2])
    def sockaddr(port):
        return struct.pack("!HH4s8x", socket.AF_INET, port, socket.inet_aton("127.0.0.1"))
    # sin_family is host order: fix the first two bytes
    good, bad = bytearray(sockaddr(allowed)), bytearray(sockaddr(denied))
    good[0:2] = bad[0:2] = struct.pack("=H", socket.AF_INET)
    buf = ctypes.create_string_buffer(bytes(good), 16)
    stop = False
    def flip():
        while not stop:
            ctypes.memmove(buf, bytes(bad), 16)
            ctypes.memmove(buf, bytes(good), 16)
    threads = [threading.Thread(target=flip) for _ in range(2)]
    for t in threads: t.start()
    connected = 0
    deadline = time.monotonic() + float(sys.argv[3])
    tries = 0
    while time.monotonic() < deadline and tries < 20000:
        tries += 1
        s = socket.socket()
        if libc.connect(s.fileno(), buf, 16) == 0:
            connected += 1
        s.close()
    stop = True
    for t in threads: t.join()
    print(tries, connected)
""")


def test_allow_toctou_rewriting_the_sockaddr_never_reaches_a_denied_port(
        as_user: Caller, server_a: CountingServer, server_b: CountingServer) -> None:
    done = as_user.run(["--allow-net", f"127.0.0.1:{server_a.port}",
                        *py(TOCTOU), str(server_a.port), str(server_b.port), "4"], timeout=120)
    assert done.returncode == 0, done.stderr
    tries, connected = map(int, done.stdout.split())
    assert tries > 100 and connected > 0  # the race ran, and the allowed port was reached
    assert server_b.accepted == 0


# A socket the supervisor connected for the sandbox lives in the host's network. Attack: use it
# to reach what the allowlist does not name (send elsewhere, reconnect, fast-open, listen).
HOST_SOCKET_ATTACKS = textwrap.dedent("""
    import errno, json, socket, sys
    udp_a, tcp_b, udp_b, closed_a = (int(x) for x in sys.argv[1:5])
    out = {}
    def attempt(name, action):
        try:
            out[name] = action()
        except OSError as e:
            out[name] = e.errno
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    u.connect(("127.0.0.1", udp_a))                    # allowed: u is now a host socket
    attempt("send_peer", lambda: u.send(b"to a"))
    attempt("sendto_b", lambda: u.sendto(b"sendto b", ("127.0.0.1", udp_b)))
    attempt("sendmsg_b", lambda: u.sendmsg([b"sendmsg b"], [], 0, ("127.0.0.1", udp_b)))
    attempt("sendmsg_peer", lambda: u.sendmsg([b"sendmsg a"]))
    attempt("reconnect_udp_b", lambda: u.connect(("127.0.0.1", udp_b)))
    t = socket.socket()
    t.setblocking(False)
    attempt("connect_closed", lambda: t.connect_ex(("127.0.0.1", closed_a)))   # allowed, refused
    import time; time.sleep(0.5)
    attempt("so_error", lambda: t.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    t.setblocking(True); t.settimeout(5)
    attempt("reconnect_b", lambda: t.connect_ex(("127.0.0.1", tcp_b)))
    attempt("fastopen_b", lambda: t.sendto(b"x", socket.MSG_FASTOPEN, ("127.0.0.1", tcp_b)))
    attempt("listen", lambda: t.listen(5))
    print(json.dumps(out))
""")


def test_allow_host_sockets_reach_nothing_else(as_user: Caller, server_b: CountingServer) -> None:
    udp_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp_a, udp_b:
        udp_a.bind(("127.0.0.1", 0))
        udp_b.bind(("127.0.0.1", 0))
        closed_a = free_port()
        ports = [udp_a.getsockname()[1], server_b.port, udp_b.getsockname()[1], closed_a]
        done = as_user.run(["--allow-net", f"127.0.0.1:{ports[0]}", "--allow-net", f"127.0.0.1:{closed_a}",
                            *py(HOST_SOCKET_ATTACKS), *map(str, ports)])
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        udp_a.settimeout(2)
        got_a = {udp_a.recv(100) for _ in range(2)}
        udp_b.setblocking(False)
        with pytest.raises(BlockingIOError):
            udp_b.recv(100)  # nothing reached B
    assert got_a == {b"to a", b"sendmsg a"}
    assert (out["send_peer"], out["sendmsg_peer"]) == (4, 9)
    assert out["sendto_b"] == out["sendmsg_b"] == out["reconnect_udp_b"] == errno.EACCES
    assert out["connect_closed"] == errno.EINPROGRESS and out["so_error"] == errno.ECONNREFUSED
    assert out["reconnect_b"] == out["fastopen_b"] == out["listen"] == errno.EACCES
    assert server_b.accepted == 0


def test_allow_filter_sends_only_addressed_sends_to_the_supervisor() -> None:
    """send() (sendto without an address) goes straight through the filter; an address or
    MSG_FASTOPEN sends it to the supervisor; the hot-call fast path shadows no row."""
    import viewbox
    from viewbox import core
    from test_attacks import RET_ALLOW, run_filter

    plan = viewbox.Sandbox().compile(["true"])
    program = core.seccomp_program(plan.seccomp_deny_groups, core.lib.VB_FAMILY_NET)
    notify = 0x7FC00000  # SECCOMP_RET_USER_NOTIF
    sendto, connect, read, keyctl = 44, 42, 0, 250
    assert run_filter(program, sendto, args=(3, 0, 10, 0, 0, 0)) == RET_ALLOW
    assert run_filter(program, sendto, args=(3, 0, 10, 0, 0x7FFF0000, 16)) == notify
    assert run_filter(program, sendto, args=(3, 0, 10, 0, 1 << 32, 16)) == notify  # high half only
    assert run_filter(program, sendto, args=(3, 0, 10, socket.MSG_FASTOPEN, 0, 0)) == notify
    assert run_filter(program, connect, args=(3, 0x1000, 16)) == notify
    assert run_filter(program, read) == RET_ALLOW
    assert run_filter(program, keyctl) == 0x00050000 | errno.EPERM  # SECCOMP_RET_ERRNO | EPERM


# A blocking socket (no timeout: Python leaves the fd blocking) to a destination that takes a
# real round trip: the supervisor holds the call until its own connect is done.
BLOCKING_CONNECT = textwrap.dedent("""
    import json, socket, sys, threading
    host, port, closed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out = {}
    def one(i):
        s = socket.socket()
        assert s.gettimeout() is None
        s.connect((host, port))
        out[i] = s.recv(100).decode()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    s = socket.socket()
    try:
        s.connect((host, closed))
        out["closed"] = "connected"
    except OSError as e:
        out["closed"] = e.errno
    print(json.dumps(out))
""")


def test_allow_blocking_connect_is_held_until_done(as_user: Caller, test_namespace: ServerNamespace) -> None:
    done = as_user.run(["--allow-net", f"{test_namespace.address}:*",
                        *py(BLOCKING_CONNECT), test_namespace.address, str(test_namespace.port), "1"])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [out[str(i)] for i in range(8)] == [f"hello {test_namespace.host_address}\n"] * 8
    assert out["closed"] == errno.ECONNREFUSED  # the host's connect failed: so did the caller's


def test_listen_sockets_keep_working_with_an_allowlist(as_user: Caller) -> None:
    """With [net].allow, bind and listen on host sockets are refused: a socket passed in by
    [net].listen is one, and a daemon may still set its backlog again."""
    port = free_port()
    code = textwrap.dedent("""
        import socket
        server = socket.socket(fileno=3)
        server.listen(64)
        conn, _ = server.accept()
        conn.sendall(b"served")
        conn.close()
        try:
            socket.socket(fileno=3).bind(("127.0.0.1", 0))
        except OSError as e:
            print(e.errno)
    """)
    proc = as_user.popen(["run", "--listen", f"tcp:127.0.0.1:{port}", "--allow-net", "192.0.2.1:80", *py(code)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                    assert conn.recv(100) == b"served"
                    break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        out, err = proc.communicate(timeout=20)
    finally:
        stop(proc)
    assert (proc.returncode, out) == (0, f"{errno.EACCES}\n"), err


# --- 4. [net].allow by name: the sandbox's resolver ----------------------------------------------------

class ZoneServer:
    """A DNS server of the test's own on the host's loopback (UDP): answers A queries from
    `zone`, NXDOMAIN for other names, and logs every name it was asked about."""

    def __init__(self, zone: dict[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.zone = zone
        self.asked: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.address = f"{host}:{self.sock.getsockname()[1]}"
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
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True)
            self.asked.append(name)
            if name not in self.zone:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", self.zone[name]))
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


# good.test is the server in the test's namespace; bad.test the host's end of that link, where
# the test listens too; loop.test points at the loopback, where a server of the host listens.
def zone_of(namespace: ServerNamespace) -> dict[str, str]:
    return {"good.test": namespace.address, "www.good.test": namespace.address, "alias.test": namespace.address,
            "bad.test": namespace.host_address, "loop.test": "127.0.0.1"}


@pytest.fixture
def zone(test_namespace: ServerNamespace) -> Iterator[ZoneServer]:
    server = ZoneServer(zone_of(test_namespace))
    yield server
    server.close()


# Resolves and connects by name, then tries the ways around: what each saw, as JSON.
BY_NAME = textwrap.dedent("""
    import json, socket, sys
    port, other_port = int(sys.argv[1]), int(sys.argv[2])
    out = {}
    def greet(host, port):
        try:
            with socket.create_connection((host, port), timeout=10) as c:
                return c.recv(100).decode()
        except socket.gaierror as e:
            return "unresolved"
        except OSError as e:
            return e.errno
    for target in sys.argv[3:]:
        host, _, at = target.partition("@")
        out[target] = greet(host, int(at or port))
    print(json.dumps(out))
""")


def test_allow_by_name_resolves_and_connects_only_the_allowed_name(
        as_user: Caller, shared_dir: pathlib.Path, zone: ZoneServer, test_namespace: ServerNamespace) -> None:
    port = test_namespace.port
    host_side = CountingServer(test_namespace.host_address, port)  # where bad.test points
    audit = shared_dir / "audit.jsonl"
    try:
        # good.test's address is private: names resolve into a network a rule names by address
        done = as_user.run(["--audit", str(audit), "--allow-net", f"good.test:{port}", "--dns", zone.address,
                            "--allow-net", f"{test_namespace.address}:1",
                            *py(BY_NAME), str(port), "0", "good.test", "bad.test", test_namespace.host_address,
                            f"good.test@{port - 1}"])
    finally:
        host_side.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "good.test": f"hello {test_namespace.host_address}\n",  # connected from the host's side
        "bad.test": "unresolved",
        test_namespace.host_address: errno.EACCES,  # bad.test's address, tried directly
        f"good.test@{port - 1}": errno.EACCES,      # the name's address, another port
    }
    assert host_side.accepted == 0
    # a name outside the allowlist is answered by viewbox: it never leaves the sandbox
    assert "bad.test" not in zone.asked and "good.test" in zone.asked
    assert done.stderr.splitlines() == [
        "viewbox: denied lookup of bad.test: not in [net].allow",
        f"viewbox: denied connect to {test_namespace.host_address}:{port}: not in [net].allow",
        f"viewbox: denied connect to {test_namespace.address}:{port - 1} (good.test): not in [net].allow"]
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    lookups = {(e["name"], e["type"], e["decision"]) for e in events if e["event"] == "dns"}
    assert ("good.test", "A", "allow") in lookups and ("bad.test", "A", "deny") in lookups
    allowed = next(e for e in events if e["event"] == "dns" and e["name"] == "good.test" and e["type"] == "A")
    assert allowed["addresses"] == [test_namespace.address] and allowed["rule"] == "--allow-net"
    connects = [e for e in events if e["event"] == "syscall" and e["syscall"] == "connect" and e["decision"] == "allow"
                and e["rule"] == "--allow-net"]
    assert [e["resolved"] for e in connects] == [f"{test_namespace.address}:{port} (good.test)"]


def test_allow_by_name_never_opens_the_hosts_loopback(as_user: Caller, zone: ZoneServer,
                                                      server_a: CountingServer) -> None:
    """Attack: DNS rebinding. An allowed name whose owner points it at 127.0.0.1 must not reach
    the host's loopback services: the answer is the sandbox's own loopback."""
    done = as_user.run(["--allow-net", f"loop.test:{server_a.port}", "--dns", zone.address,
                        *py(BY_NAME), str(server_a.port), "0", "loop.test"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"loop.test": errno.ECONNREFUSED}  # nothing listens in the sandbox
    assert server_a.accepted == 0 and "loop.test" in zone.asked


def test_allow_by_name_with_curl_and_a_wildcard(as_user: Caller, test_namespace: ServerNamespace) -> None:
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    # the server in the test's namespace (a private address, so named by address for port 1)
    port = test_namespace.port
    zone = ZoneServer({"www.good.test": test_namespace.address, "good.test": test_namespace.address})
    # the server speaks no HTTP: curl reads its line as an HTTP/0.9 answer
    script = (f"curl -s --http0.9 http://www.good.test:{port}/; echo \"www=$?\"; "
              f"curl -s --http0.9 http://good.test:{port}/; echo \"apex=$?\"; "
              "cat /etc/resolv.conf")
    try:
        done = as_user.run(["--allow-net", f"*.good.test:{port}", "--dns", zone.address,
                            "--allow-net", f"{test_namespace.address}:1", "--", "sh", "-c", script])
    finally:
        zone.close()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # "*.good.test" is any name under good.test, not good.test itself (6: could not resolve)
    # that server closes without reading the request: curl may see the reset after the greeting
    assert lines[0] == f"hello {test_namespace.host_address}" and lines[1] in ("www=0", "www=56")
    assert lines[2] == "apex=6"
    assert [line for line in lines if line.startswith("nameserver")] == ["nameserver 127.0.0.53"]
    assert zone.asked and set(zone.asked) == {"www.good.test"}


def zone_server_on_port_53(zone: dict[str, str]) -> ZoneServer:
    """A ZoneServer on port 53 (a resolv.conf names no port) of a loopback address of 127.77.0.0/16
    no other server has taken (another run of the suite may hold one)."""
    for _ in range(100):
        host = str(ipaddress.ip_address("127.77.0.0") + random.randrange(1, 0xFFFF))
        try:
            return ZoneServer(zone, host=host, port=53)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise AssertionError("port 53 is taken on every address tried")


def test_allow_by_name_through_the_hosts_resolver(tmp_path: pathlib.Path, test_namespace: ServerNamespace) -> None:
    """Without [net].dns, names resolve as the host's own programs resolve them (getaddrinfo):
    here a private mount namespace gives viewbox a resolv.conf naming the test's server."""
    server = zone_server_on_port_53(zone_of(test_namespace))
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {server.address.removesuffix(':53')}\n")
    port = test_namespace.port
    try:
        script = f"mount --bind {conf} /etc/resolv.conf && exec \"$@\""
        done = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", sys.executable, "-m", "viewbox",
             "run", "--allow-net", f"good.test:{port}", "--allow-net", f"{test_namespace.address}:1",
             *py(BY_NAME), str(port), "0", "good.test"],
            capture_output=True, text=True, timeout=60, cwd="/", env=Caller("root").viewbox_env(None))
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["good.test"] == f"hello {test_namespace.host_address}\n"
    assert "good.test" in server.asked


def test_dns_without_a_name_to_resolve_is_refused(tmp_path: pathlib.Path) -> None:
    import viewbox

    path = write_policy(tmp_path, '[net]\nallow = ["10.0.0.1:80"]\ndns = ["10.0.0.53"]\n')
    with pytest.raises(PolicyError, match=r":3: \[net\].dns: no \[net\].allow entry is a name"):
        viewbox.Sandbox(policy=path).compile(["true"])


# --- counters: what crossed the sandbox's network edge, in the run's usage -----------------------------

# Serves three clients through [net].publish: reads 1000 bytes, answers 2000, and waits for the
# client to close before the next (so every byte is through before the command ends).
COUNTED_DAEMON = textwrap.dedent("""
    import socket
    server = socket.create_server(("127.0.0.1", 8000))
    for _ in range(3):
        conn, _ = server.accept()
        got = b""
        while len(got) < 1000:
            got += conn.recv(1000 - len(got))
        conn.sendall(b"y" * 2000)
        while conn.recv(100):
            pass
        conn.close()
""")


def test_usage_counts_what_publish_relayed(as_user: Caller, shared_dir: pathlib.Path) -> None:
    port = free_port()
    report = shared_dir / "report.json"
    proc = as_user.popen(["run", "--report", str(report), "--publish", f"127.0.0.1:{port}:8000",
                          *py(COUNTED_DAEMON)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        served = 0
        deadline = time.monotonic() + 20
        while served < 3:
            assert time.monotonic() < deadline, "the daemon inside never answered"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                    conn.sendall(b"x" * 1000)
                    got = b""
                    while len(got) < 2000 and (chunk := conn.recv(4096)):
                        got += chunk
            except OSError:
                got = b""
            if got == b"y" * 2000:
                served += 1
            else:
                time.sleep(0.05)  # the daemon is not listening yet: the forwarder hung up
        out, err = proc.communicate(timeout=20)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    usage = json.loads(report.read_text())["usage"]
    # the tries made before the daemon listened never reached it: they are not counted
    assert (usage["net_connections_in"], usage["net_rx_bytes"], usage["net_tx_bytes"]) == (3, 3000, 6000)
    assert usage["net_connections_out"] == 0


def test_usage_counts_allowed_connections_and_says_what_it_cannot_see(
        as_user: Caller, shared_dir: pathlib.Path, server_a: CountingServer, server_b: CountingServer) -> None:
    report = shared_dir / "report.json"
    done = as_user.run(["--report", str(report), "--allow-net", f"127.0.0.1:{server_a.port}",
                        *py(CONNECT), *[f"127.0.0.1:{server_a.port}"] * 3, f"127.0.0.1:{server_b.port}"])
    assert done.returncode == 0, done.stderr
    usage = json.loads(report.read_text())["usage"]
    assert usage["net_connections_out"] == 3 == server_a.accepted
    # the bytes of a connection the supervisor handed in pass through nothing of viewbox's
    assert (usage["net_rx_bytes"], usage["net_tx_bytes"]) == (None, None)
    assert usage["net_connections_in"] == 0

    done = as_user.run(["--report", str(report), "--net", "host", "--", "true"])
    assert done.returncode == 0, done.stderr
    usage = json.loads(report.read_text())["usage"]
    assert [usage[k] for k in ("net_rx_bytes", "net_tx_bytes", "net_connections_in", "net_connections_out")] == \
        [None] * 4


def test_usage_counts_a_private_networks_traffic(test_namespace: ServerNamespace, tmp_path: pathlib.Path,
                                                private_network_lock: None) -> None:
    as_root = Caller("root")  # mode private is root's
    report = tmp_path / "report.json"
    target = f"{test_namespace.address}:{test_namespace.port}"
    done = as_root.run(["--report", str(report), "--net", "private", *py(CONNECT), target, target])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[target] == f"hello {test_namespace.host_address}\n"
    usage = json.loads(report.read_text())["usage"]
    assert usage["net_connections_out"] == 2
    # two TCP handshakes and greetings, as frames: more than the greetings' bytes
    greeting = len(f"hello {test_namespace.host_address}\n")
    assert usage["net_rx_bytes"] > 2 * greeting and usage["net_tx_bytes"] > 0


# Options set before connect() and read back after it: the same natively and through [net].allow.
OPTIONS = textwrap.dedent("""
    import json, socket, sys
    port = int(sys.argv[1])
    out = {}
    for label, options in [("set", [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                                     (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                                     (socket.SOL_SOCKET, socket.SO_RCVBUF, 65536),
                                     (socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)]),
                           ("untouched", [])]:
        s = socket.socket()
        for level, name, value in options:
            s.setsockopt(level, name, value)
        s.connect(("127.0.0.1", port))
        out[label] = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                      s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                      s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                      s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)]
        s.close()
    print(json.dumps(out))
""")


def test_allow_carries_the_options_a_program_set(as_user: Caller, server_a: CountingServer) -> None:
    native = as_user.native([INSIDE_PYTHON, "-c", OPTIONS, str(server_a.port)])
    done = as_user.run(["--allow-net", f"127.0.0.1:{server_a.port}", *py(OPTIONS), str(server_a.port)])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(native.stdout)
    assert server_a.accepted == 4


# --- viewbox learn --learn-net: the destinations a run used, as [net].allow ------------------------

def test_learn_net_writes_the_destinations_used_and_replays(
        as_user: Caller, shared_dir: pathlib.Path, zone: ZoneServer, test_namespace: ServerNamespace) -> None:
    host_side = CountingServer(test_namespace.host_address)  # reached by its address, no lookup
    base = shared_dir / "base.toml"
    base.write_text(f'[viewbox]\nversion = 1\nextends = ["default"]\n[net]\ndns = ["{zone.address}"]\n')
    base.chmod(0o644)
    learned = shared_dir / "learned.toml"
    port = test_namespace.port
    # alias.test shares good.test's address: each connection is named after its own lookup
    used = [f"good.test@{port}", f"{test_namespace.host_address}@{host_side.port}", f"alias.test@{port}"]
    try:
        done = as_user.cli(["learn", "-o", str(learned), "--policy", str(base), "--learn-net",
                            *py(BY_NAME), str(port), "0", *used])
        assert done.returncode == 0, done.stderr
        greetings = {used[0]: f"hello {test_namespace.host_address}\n", used[1]: "hello from the host\n",
                     used[2]: f"hello {test_namespace.host_address}\n"}
        assert json.loads(done.stdout) == greetings
        # good.test's address is private: the learned policy names it by address too
        assert ", 4 destinations -> " in done.stderr
        text = learned.read_text()
        allow = sorted(str(rule) for rule in load_policy(str(learned)).net.allow)
        assert allow == sorted([f"good.test:{port}", f"alias.test:{port}", f"{test_namespace.address}:{port}",
                                f"{test_namespace.host_address}:{host_side.port}"]), text
        assert load_policy(str(learned)).net.dns == (zone.address,)

        # replayed: the same destinations, and nothing else
        replay = as_user.run(["--policy", str(learned), *py(BY_NAME), str(port), "0", *used,
                              f"www.good.test@{port}", f"good.test@{port - 1}"])
        assert replay.returncode == 0, replay.stderr + text
        assert json.loads(replay.stdout) == {**greetings, f"www.good.test@{port}": "unresolved",
                                             f"good.test@{port - 1}": errno.EACCES}
        assert host_side.accepted == 2
    finally:
        host_side.close()


def test_learn_net_never_opens_the_hosts_loopback(as_user: Caller, shared_dir: pathlib.Path,
                                                  server_a: CountingServer) -> None:
    """Learning lets the command reach anything outside the host, not the host's own services."""
    learned = shared_dir / "learned.toml"
    done = as_user.cli(["learn", "-o", str(learned), "--learn-net", *py(CONNECT), f"127.0.0.1:{server_a.port}"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {f"127.0.0.1:{server_a.port}": errno.ECONNREFUSED}
    assert server_a.accepted == 0
    assert load_policy(str(learned)).net.allow == ()
