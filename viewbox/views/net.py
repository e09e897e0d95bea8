"""The network view: the sandbox's own network namespace, or (explicitly, unsafely) the host's;
sockets passed in ([net].listen) and host ports forwarded in ([net].publish).

"none" gives a namespace with only loopback up; "private" (root) one wired to
the host by a veth pair with NAT; "host" shares the host's interfaces, so the
sandbox can reach everything the caller can. Listening
sockets are bound here, on the host, by viewbox (viewbox.sandbox) and work in
either mode: the sandbox only ever accepts on them. Published ports need the
sandbox's own namespace: with "host" a daemon's ports already are the host's.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from viewbox.errors import PolicyError, SpawnError, UnavailableLayer
from viewbox.plan import ListenSpec, NetName, NetRule, PublishSpec

if TYPE_CHECKING:
    import socket

    from viewbox.core import Usage as KernelUsage
    from viewbox.plan import Plan
    from viewbox.policy.model import Policy
    from viewbox.views import CompileContext


def check(policy: Policy) -> list[PolicyError]:
    """What [net]'s fields say wrong together."""
    net = policy.net
    errors: list[PolicyError] = []
    names: dict[str, int] = {}
    for index, sock in enumerate(net.listen):
        if sock.name in names:
            errors.append(policy.origin("net.listen", index).error(
                policy.label("net.listen", index), f"socket name {sock.name!r} is also "
                f"{policy.label('net.listen', names[sock.name])}'s "
                "(give one a name: \"NAME=tcp:...\")"))
        names.setdefault(sock.name, index)
    if net.mode == "host":
        errors += [policy.origin("net.publish", index).error(
            policy.label("net.publish", index), 'publish needs the sandbox\'s own network (mode "none" or "private"): '
            'with mode "host" the daemon binds the host\'s ports itself') for index in range(len(net.publish))]
    if net.mode != "none":
        errors += [policy.origin("net.allow", index).error(
            policy.label("net.allow", index), f'allow needs mode "none" (the sandbox\'s own network, which the '
            f'supervisor adds these destinations to), not mode {net.mode!r}') for index in range(len(net.allow))]
    if net.dns and not any(rule.name for rule in net.allow):
        errors.append(policy.origin("net.dns", 0).error(
            "[net].dns", "no [net].allow entry is a name: [net].dns says where names are resolved"))
    return errors


def contribute(policy: Policy, context: CompileContext) -> dict[str, object]:
    from viewbox.policy.model import expand  # the model imports views: at run time only

    net = policy.net
    if net.mode == "private" and context.caller_uid != 0:
        raise UnavailableLayer(*_PRIVATE_NEEDS_ROOT)
    net_allow = tuple(NetRule(network=rule.network, port_min=rule.port_min, port_max=rule.port_max,
                              origin=_origin_text(policy, "net.allow", index, "[net].allow"))
                      for index, rule in enumerate(net.allow) if not rule.name)
    net_names = tuple(NetName(name=rule.name, port_min=rule.port_min, port_max=rule.port_max,
                              origin=_origin_text(policy, "net.allow", index, "[net].allow"))
                      for index, rule in enumerate(net.allow) if rule.name)
    listen = tuple(ListenSpec(name=sock.name, kind=sock.kind, host=sock.host, port=sock.port,
                              path=expand(sock.path, cwd=context.cwd) if sock.path else "")
                   for sock in net.listen)
    publish = tuple(PublishSpec(host=port.host, host_port=port.host_port, port=port.port)
                    for port in net.publish)
    return {"unshare_net": net.mode == "none", "private_network": net.mode == "private",
            "listen": listen, "publish": publish, "net_allow": net_allow, "net_names": net_names,
            "dns_servers": net.dns}


def _origin_text(policy: Policy, name: str, index: int, label: str) -> str:
    """'p.toml:9: [net].allow[0]', '--allow-net' or 'api: allow_net': for events."""
    origin = policy.origin(name, index)
    if origin.flag or not origin.file:
        return str(origin)
    return f"{origin.file}:{origin.line}: {label}[{index}]" if origin.line else f"{origin.file}: {label}[{index}]"


class NetUsage(NamedTuple):
    """usage.net_*: what crossed the sandbox's network edge (None: not all of it was seen)."""

    net_rx_bytes: int | None
    net_tx_bytes: int | None
    net_connections_in: int | None
    net_connections_out: int | None


def network_usage(plan: Plan, kernel: KernelUsage, network: PrivateNetwork | None) -> NetUsage:
    """A run's usage.net_* fields: what crossed its network's edge, in bytes and connections.

    viewbox sees the connections the supervisor makes for [net].allow (out), the
    connections and bytes the forwarder relays for [net].publish (in), and, in mode
    "private", the frames through the sandbox's eth0 and the connections NAT gave an address
    (out). It does not see the bytes on sockets of the host's network the sandbox holds
    itself, nor the connections it accepts on them: [net].listen's, and its [net].allow
    connections. A field is None where part of it may have gone that way, and with mode
    "host", where nothing is seen.
    """
    if kernel.net_connections_out is None:  # the host's network
        return NetUsage(None, None, None, None)
    rx: int | None = kernel.net_bytes_in or 0
    tx: int | None = kernel.net_bytes_out or 0
    connections_out: int | None = kernel.net_connections_out
    if network:
        traffic = network.traffic()
        if traffic is None:
            rx = tx = connections_out = None
        else:
            rx, tx, connections_out = (rx or 0) + traffic[0], (tx or 0) + traffic[1], (connections_out or 0) + traffic[2]
    bytes_unseen = bool(plan.listen or plan.net_allow or plan.net_names)
    return NetUsage(net_rx_bytes=None if bytes_unseen else rx, net_tx_bytes=None if bytes_unseen else tx,
                    net_connections_in=None if plan.listen else kernel.net_connections_in,
                    net_connections_out=connections_out)


# --- at spawn: the host's side of listen and publish ------------------------------

class HostSockets:
    """The listening sockets a run binds on the host for [net].listen and [net].publish.

    viewbox's own copies are closed once the sandbox holds them (`release`); unix socket
    files are removed when the sandbox ends (`cleanup`), as systemd removes a socket
    unit's files when it stops."""

    def __init__(self) -> None:
        self.listen: list[socket.socket] = []
        self.publish: list[socket.socket] = []
        self._unix_files: list[tuple[str, int, int]] = []  # path, st_dev, st_ino

    @classmethod
    def bind(cls, listen: tuple[ListenSpec, ...], publish: tuple[PublishSpec, ...]) -> HostSockets:
        """Binds every socket; raises SpawnError naming the one that failed (and binds none)."""
        sockets = cls()
        try:
            for index, spec in enumerate(listen):
                sockets.listen.append(sockets._bind_listen(spec, index))
            for index, port in enumerate(publish):
                where = f"{_host_text(port.host)}:{port.host_port}"
                sockets.publish.append(_bind_tcp(port.host, port.host_port, f"[net].publish[{index}] {where}"))
        except BaseException:
            sockets.release()
            sockets.cleanup()
            raise
        return sockets

    def _bind_listen(self, spec: ListenSpec, index: int) -> socket.socket:
        import socket  # as every use below: a run without sockets or a private network never loads it

        if spec.kind == "tcp":
            return _bind_tcp(spec.host, spec.port, f"[net].listen[{index}] tcp:{_host_text(spec.host)}:{spec.port}")
        what = f"[net].listen[{index}] unix:{spec.path}"
        try:
            if stat.S_ISSOCK(os.lstat(spec.path).st_mode):
                os.unlink(spec.path)  # a socket file left by an earlier run: nothing listens on a file alone
        except FileNotFoundError:
            pass
        except OSError as err:
            raise SpawnError(f"bind {what}", err.errno or errno.EIO) from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(spec.path)
            info = os.lstat(spec.path)
            self._unix_files.append((spec.path, info.st_dev, info.st_ino))
            sock.listen(socket.SOMAXCONN)
        except OSError as err:
            sock.close()
            raise SpawnError(f"bind {what}", err.errno or errno.EIO) from None
        return sock

    def child_fds(self) -> dict[int, int]:
        """[net].listen's sockets at fd 3, 4, ... inside (systemd's SD_LISTEN_FDS_START)."""
        return {sock.fileno(): LISTEN_FDS_START + index for index, sock in enumerate(self.listen)}

    def publish_fds(self) -> list[int]:
        return [sock.fileno() for sock in self.publish]

    def release(self) -> None:
        """Closes viewbox's copies (the sandbox holds its own once spawned)."""
        for sock in [*self.listen, *self.publish]:
            sock.close()

    def cleanup(self) -> None:
        """Removes the unix socket files this run made (if nothing replaced them since)."""
        for path, dev, ino in self._unix_files:
            try:
                info = os.lstat(path)
                if (info.st_dev, info.st_ino) == (dev, ino):
                    os.unlink(path)
            except OSError:
                pass
        self._unix_files.clear()


#: the first fd of passed sockets, as systemd's sd_listen_fds() expects
LISTEN_FDS_START = 3
#: the family of nftables' IPv4 tables (the number of AF_INET)
NFPROTO_IPV4 = 2


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bind_tcp(host: str, port: int, what: str) -> socket.socket:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as err:
        sock.close()
        raise SpawnError(f"bind {what}", err.errno or errno.EIO) from None
    return sock


# --- at spawn: mode "private" ------------------------------------------------------

#: Each private sandbox gets a /30 of this range: .1 is the host's end of its veth pair,
#: .2 the sandbox's eth0 (and its default route goes to .1).
PRIVATE_RANGE = "10.200.0.0/16"
#: prefix of what a private network leaves in the host's: veth "vbh<pid>-<n>", nftables table
#: and (during setup) named network namespace "viewbox-<pid>-<n>"
_PRIVATE_PREFIX = "viewbox-"

_private_counter = iter(range(1, 2**31))

_PRIVATE_NEEDS_ROOT = (
    "private network", 'mode "private" creates a veth pair, addresses, routes and NAT rules in '
    "the host's network, which only root may do",
    'run as root, or use mode "none" (with [net].listen or [net].publish for inbound connections)')


class PrivateNetwork:
    """Mode "private": a network namespace of its own wired to the host through a veth pair,
    with addresses, a default route and a masquerading NAT rule, all made with pyroute2.

    Made before the spawn (root only); `netns_fd()` is what the sandbox is cloned into.
    The namespace's name is removed as soon as the sandbox runs in it (`after_spawn`); our
    fd of it keeps it, and the veth pair, until `cleanup` has read their counters
    (`traffic`), closes it and removes the host's end and the NAT table. A run that was SIGKILLed leaves its table and veth
    behind until the next private run, which removes those of processes that are gone.
    """

    def __init__(self) -> None:
        self.name = f"{_PRIVATE_PREFIX}{os.getpid()}-{next(_private_counter)}"
        self.host_if = f"vbh{self.name[len(_PRIVATE_PREFIX):]}"[:15]
        self.host_address = ""
        self.sandbox_address = ""
        self._fd = -1
        self._named = False
        self._table = False

    @classmethod
    def create(cls) -> PrivateNetwork:
        """Builds it; raises UnavailableLayer when not root, SpawnError when a step fails."""
        if os.geteuid() != 0:
            raise UnavailableLayer(*_PRIVATE_NEEDS_ROOT)
        network = cls()
        try:
            network._build()
        except BaseException:
            network.cleanup()
            raise
        return network

    def _build(self) -> None:
        from pyroute2 import IPRoute, netns  # only for private networks: a heavy import

        _remove_stale()
        step = "create the network namespace"
        try:
            netns.create(self.name)
            self._named = True
            self._fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
            with IPRoute() as host, _subnet_lock():
                host_net, sandbox_net = _free_subnet(host)
                self.host_address, self.sandbox_address = str(host_net), str(sandbox_net)
                step = f"create the veth pair {self.host_if}"
                host.link("add", ifname=self.host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": self.name})
                index = host.link_lookup(ifname=self.host_if)[0]
                step = f"configure {self.host_if}"
                host.addr("add", index=index, address=self.host_address, prefixlen=30)
                host.link("set", index=index, state="up")
            with IPRoute(netns=self.name) as inside:
                step = "configure the sandbox's eth0 and lo"
                inside.link("set", index=inside.link_lookup(ifname="lo")[0], state="up")
                eth0 = inside.link_lookup(ifname="eth0")[0]
                inside.addr("add", index=eth0, address=self.sandbox_address, prefixlen=30)
                inside.link("set", index=eth0, state="up")
                inside.route("add", dst="default", gateway=self.host_address)
            step = "add the NAT rule (nftables)"
            self._add_nat()
            step = "enable IPv4 forwarding (net.ipv4.ip_forward)"
            _enable_forwarding()
        except OSError as err:
            raise SpawnError(f"private network: {step}", err.errno or errno.EIO) from None
        except Exception as err:  # pyroute2 reports netlink errors as its own exception types
            code = getattr(err, "code", 0)
            raise SpawnError(f"private network: {step}: {err}", 0 if not isinstance(code, int) else code) from None

    def _add_nat(self) -> None:
        from pyroute2.nftables.expressions import genex, ipv4addr, masq
        from pyroute2.nftables.main import NFTables

        nft = NFTables(nfgen_family=NFPROTO_IPV4)
        try:
            nft.table("add", name=self.name)
            self._table = True
            nft.chain("add", table=self.name, name="postrouting", hook="postrouting", type="nat",
                      priority=100, policy=1)
            # a NAT chain sees the first packet of each connection only: its counter counts them
            nft.rule("add", table=self.name, chain="postrouting",
                     expressions=(ipv4addr(src=f"{self.sandbox_address}/30"), [genex("counter", {})], masq()))
        finally:
            nft.close()

    def traffic(self) -> tuple[int, int, int] | None:
        """(bytes in, bytes out, connections out) through the sandbox's eth0 so far: the host
        end's interface counters (frames, headers included) and the NAT rule's; None when they
        cannot be read."""
        from pyroute2 import IPRoute
        from pyroute2.nftables.main import NFTables

        try:
            with IPRoute() as host:
                (link,) = host.link("get", ifname=self.host_if)
                stats = link.get_attr("IFLA_STATS64")
                # the host's end receives what the sandbox sends, and sends what it receives
                bytes_in, bytes_out = int(stats["tx_bytes"]), int(stats["rx_bytes"])
            nft = NFTables(nfgen_family=NFPROTO_IPV4)
            try:
                connections = sum(
                    int(expression.get_attr("NFTA_EXPR_DATA").get_attr("NFTA_COUNTER_PACKETS") or 0)
                    for rule in nft.get_rules() if rule.get_attr("NFTA_RULE_TABLE") == self.name
                    for expression in rule.get_attr("NFTA_RULE_EXPRESSIONS") or ()
                    if expression.get_attr("NFTA_EXPR_NAME") == "counter")
            finally:
                nft.close()
        except Exception:  # gone already, or pyroute2's own netlink error types
            return None
        return bytes_in, bytes_out, connections

    def netns_fd(self) -> int:
        return self._fd

    def after_spawn(self) -> None:
        """The sandbox is in the namespace (or failed to start): drop its name. Our fd keeps
        the namespace, and so the veth pair, until `cleanup` has read their counters."""
        if self._named:
            from pyroute2 import netns

            try:
                netns.remove(self.name)
            except OSError:
                pass
            self._named = False

    def describe(self) -> dict[str, str]:
        return {"mode": "private", "host_interface": self.host_if, "host_address": self.host_address,
                "sandbox_address": self.sandbox_address}

    def cleanup(self) -> None:
        """Removes everything it made in the host's network (each step whatever the others did)."""
        self.after_spawn()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        _delete_link(self.host_if)
        if self._table:
            _delete_table(self.name)
            self._table = False
        try:
            with _subnet_lock():
                _restore_forwarding()
        except OSError:
            pass  # forwarding stays on, as it does when viewbox is killed: the next run retries


def _free_subnet(host: Any) -> tuple[Any, Any]:
    """The first /30 of PRIVATE_RANGE no host interface has an address in: (.1, .2)."""
    import ipaddress
    import socket

    used = [ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}").network
            for msg in host.get_addr(family=socket.AF_INET)]
    for subnet in ipaddress.ip_network(PRIVATE_RANGE).subnets(new_prefix=30):
        if not any(subnet.overlaps(net) for net in used):
            first = subnet.network_address
            return first + 1, first + 2
    raise SpawnError(f"private network: every /30 of {PRIVATE_RANGE} is in use", errno.EADDRINUSE)


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """Held from choosing a free /30 to taking it: concurrent viewbox processes choose in turn."""
    fd = os.open("/run/viewbox-private-net.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


#: Exists while IPv4 forwarding is on because viewbox turned it on: the last private
#: network to go turns it off again (a host that had it on keeps it on).
_FORWARDING_MARK = "/run/viewbox-ip-forward"
_FORWARDING_KNOB = "/proc/sys/net/ipv4/ip_forward"


def _enable_forwarding() -> None:
    # Replies to the sandbox's connections come in on the host's uplink and are
    # forwarded after NAT: that takes forwarding on every interface, as Docker,
    # Podman and libvirt also turn on; viewbox turns it off again after its last
    # private network (_restore_forwarding).
    with open(_FORWARDING_KNOB, "r+") as knob:
        if knob.read().strip() != "1":
            with open(_FORWARDING_MARK, "w"):
                pass
            knob.seek(0)
            knob.write("1")


def _restore_forwarding() -> None:
    """Turns IPv4 forwarding off again if viewbox turned it on and no private network of any
    viewbox process is left (their host ends are the vbh* links). Call with _subnet_lock held:
    a network being built takes its link under the lock before it turns forwarding on."""
    if not os.path.exists(_FORWARDING_MARK):
        return
    from pyroute2 import IPRoute

    with IPRoute() as host:
        if any(str(link.get_attr("IFLA_IFNAME") or "").startswith("vbh") for link in host.get_links()):
            return
    with open(_FORWARDING_KNOB, "w") as knob:
        knob.write("0")
    os.unlink(_FORWARDING_MARK)


def _delete_link(name: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as host:
        for index in host.link_lookup(ifname=name):
            try:
                host.link("del", index=index)
            except Exception:  # already gone with its namespace
                pass


def _delete_table(name: str) -> None:
    from pyroute2.nftables.main import NFTables

    nft = NFTables(nfgen_family=NFPROTO_IPV4)
    try:
        nft.table("del", name=name)
    except Exception:
        pass
    finally:
        nft.close()


def _owner_gone(name: str, prefix: str) -> bool:
    """Whether `name` ("<prefix><pid>-<n>") was made by a process that no longer exists."""
    pid, _, rest = name[len(prefix):].partition("-")
    if not name.startswith(prefix) or not pid.isdigit() or not rest.isdigit():
        return False
    return not os.path.exists(f"/proc/{pid}")


def _remove_stale() -> None:
    """Removes what private networks of viewbox processes that died (SIGKILL) left behind."""
    from pyroute2 import IPRoute, netns
    from pyroute2.nftables.main import NFTables

    for name in netns.listnetns():
        if _owner_gone(name, _PRIVATE_PREFIX):
            try:
                netns.remove(name)
            except OSError:
                pass
    with IPRoute() as host:
        stale = [link.get_attr("IFLA_IFNAME") for link in host.get_links()]
    for name in stale:
        if name and _owner_gone(name, "vbh"):
            _delete_link(name)
    nft = NFTables(nfgen_family=NFPROTO_IPV4)
    try:
        tables = [table.get_attr("NFTA_TABLE_NAME") for table in nft.get_tables()]
    finally:
        nft.close()
    for name in tables:
        if name and _owner_gone(name, _PRIVATE_PREFIX):
            _delete_table(name)
    with _subnet_lock():
        _restore_forwarding()
