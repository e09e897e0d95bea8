"""The net view's resolver: [net].allow by name ("pypi.org:443", "*.example.com:443").

A sandbox whose allowlist names domains gets its own DNS server address,
127.0.0.53:53 inside its network namespace (its /etc/resolv.conf names only
that). The socket is bound there by the sandbox's init and handed out
(csrc/spawn.c); this module answers on it, from the host's side:

- a query for a name no rule names gets NXDOMAIN, an audit event, and a
  one-line note (`viewbox: denied lookup of bad.test: not in [net].allow`);
- a query for an allowed name is resolved here, by the servers of [net].dns
  or, without them, by the host's own resolver (getaddrinfo: /etc/hosts,
  then DNS), and every address found is pinned into the sandbox's allowlist
  (`Supervisor.pin`) with the rule's ports *before* the answer goes back. So
  a connect() made with an answer always finds its address allowed, and an
  address nobody resolved for the sandbox stays refused: a program cannot
  name its way around the allowlist, and a name cannot be resolved to reach
  another port of the same host.

Whoever controls a name's DNS can point it anywhere (DNS rebinding), so not
every address is pinned:
- a loopback address (127.0.0.0/8, ::1, and the unspecified ones) is given as
  it is but never pinned: as for any loopback address no rule names, it is the
  sandbox's own loopback; only a rule naming one ("127.0.0.1:8080") opens a
  service on the host's loopback;
- an address of the host's own interfaces (any of them), a link-local one
  (169.254.0.0/16, where clouds serve instance metadata, and fe80::/10) or a
  multicast one is never pinned and left out of the answer;
- any other address that is not globally routable (10.0.0.0/8, 192.168.0.0/16,
  fc00::/7, ...) is pinned only when an address rule of [net].allow covers it
  (with any port): naming a private network by address is what lets names
  resolve into it.
Only A and AAAA records owned by the asked name, or by the end of its CNAME
chain, count: other records an upstream adds are ignored.

The host's side stays bounded whatever the sandbox sends: queries past a rate
(QUERY_RATE a second, bursts of QUERY_BURST) are dropped, at most
MAX_PENDING are resolved or waiting at once (the rest get SERVFAIL at once),
and a lookup that failed is remembered for FAILED_TTL seconds (SERVFAIL again,
no new upstream query). Dropped and refused queries are counted in `dns`
events, one a second at most.

Pins last as long as the sandbox: DNS answers carry a short TTL, but an
address the sandbox once had a right to stays allowed (a connection made
later with a cached answer must not fail).
"""
from __future__ import annotations

import ipaddress
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from viewbox.plan import NetName

#: TTL of the answers given to the sandbox, and how long a lookup is reused, in seconds
ANSWER_TTL = 30
#: addresses per answer: 12 AAAA records and the question fit a 512-byte UDP reply
MAX_ADDRESSES = 12
#: seconds one upstream server gets for one query
UPSTREAM_TIMEOUT = 2.0
#: names whose refusal is noted on the deny-note fd (each once)
MAX_NOTED = 64
#: lookups kept for reuse (the oldest go first)
MAX_CACHED = 1024
#: seconds a failed lookup is answered SERVFAIL from memory
FAILED_TTL = 5
#: queries a second a sandbox may send (and bursts of); the rest are dropped
QUERY_RATE = 100
QUERY_BURST = 200
#: queries being resolved or waiting for a worker; past this, SERVFAIL at once
MAX_PENDING = 64

Pin = Callable[[str, int, int, str, str], None]   # address, port_min, port_max, origin, name
Emit = Callable[..., None]                         # Audit.emit(kind, **details)


class LookupFailed(Exception):
    """No resolver answered (the sandbox gets SERVFAIL and may retry)."""


class Resolver:
    """Answers the sandbox's DNS queries on `sock` (bound to 127.0.0.53:53 inside): a thread
    reads them, a few workers resolve and answer, so one slow name holds up no other."""

    def __init__(self, sock: socket.socket, names: tuple[NetName, ...], servers: tuple[str, ...],
                 pin: Pin, emit: Emit, note_fd: int = -1, networks: tuple[str, ...] = ()) -> None:
        self._sock = sock
        self._names = names
        self._networks = tuple(ipaddress.ip_network(network, strict=False) for network in networks)
        self._servers = tuple(_split_server(server) for server in servers)
        self._pin = pin
        self._emit = emit
        self._note_fd = note_fd
        self._noted: set[str] = set()
        self._cache: dict[str, tuple[float, list[str] | LookupFailed]] = {}
        self._tokens = float(QUERY_BURST)
        self._refilled = time.monotonic()
        self._dropped = {"rate": 0, "busy": 0}   # queries not served, by reason
        self._reported = 0.0                     # when they were last reported
        self._gates = [threading.Lock() for _ in range(16)]
        self._lock = threading.Lock()
        self._busy = 0              # answers in progress or waiting: the socket is closed after the last
        self._closing = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="viewbox-dns")
        self._thread = threading.Thread(target=self._serve, name="viewbox-resolver", daemon=True)

    @classmethod
    def start(cls, fd: int, names: tuple[NetName, ...], servers: tuple[str, ...], pin: Pin, emit: Emit,
              note_fd: int = -1, networks: tuple[str, ...] = ()) -> Resolver:
        """Serves the socket `fd` (taken over: the resolver closes it) until `close`. `networks`:
        [net].allow's address rules, which names may resolve into when not globally routable."""
        resolver = cls(socket.socket(fileno=fd), names, servers, pin, emit, note_fd, networks)
        resolver._thread.start()
        return resolver

    def close(self) -> None:
        """Stops answering; the socket (and with it the sandbox's network namespace, which it
        keeps alive) is closed once no answer is in progress."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._release()

    def _release(self) -> None:
        with self._lock:
            last = self._closing and self._busy == 0
        if last:
            self._sock.close()

    # --- the reading thread -------------------------------------------------------

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                try:
                    data, peer = self._sock.recvfrom(4096, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                if not self._take_token():
                    self._drop("rate")
                    continue
                with self._lock:
                    if self._closing:
                        return
                    full = self._busy >= MAX_PENDING
                    if not full:
                        self._busy += 1
                if full:
                    self._drop("busy")
                    self._send_servfail(data, peer)
                    continue
                try:
                    self._workers.submit(self._answer, data, peer)
                except RuntimeError:  # shut down meanwhile
                    self._done()
                    return

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
        self._release()

    def _take_token(self) -> bool:
        """The rate limit (a token bucket; only the reading thread uses it)."""
        now = time.monotonic()
        self._tokens = min(float(QUERY_BURST), self._tokens + (now - self._refilled) * QUERY_RATE)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _drop(self, reason: str) -> None:
        """Counts a query not served; reports the counts in a `dns` event, once a second at most."""
        self._dropped[reason] += 1
        now = time.monotonic()
        if now - self._reported < 1:
            return
        first = not self._reported
        self._reported = now
        self._emit("dns", decision="deny", rule=f"over {QUERY_RATE} queries/s, or {MAX_PENDING} pending",
                   dropped=self._dropped["rate"], servfail=self._dropped["busy"])
        if first and self._note_fd >= 0:
            try:
                os.write(self._note_fd, f"viewbox: DNS queries dropped: over {QUERY_RATE}/s or "
                                        f"{MAX_PENDING} pending\n".encode())
            except OSError:
                pass

    def _send_servfail(self, data: bytes, peer: Any) -> None:
        try:
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            self._sock.sendto(response.to_wire(), peer)
        except (dns.exception.DNSException, OSError):
            pass  # not a query, or the sandbox's socket is gone

    # --- one query ----------------------------------------------------------------

    def _answer(self, data: bytes, peer: Any) -> None:
        try:
            reply = self._reply_to(data)
            if reply is not None:
                with self._lock:
                    closing = self._closing
                if not closing:
                    self._sock.sendto(reply, peer)
        except OSError:
            pass  # the sandbox is gone, or its socket
        finally:
            self._done()

    def _reply_to(self, data: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None  # not a DNS query: nothing to answer
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        qtype = dns.rdatatype.to_text(question.rdtype)
        rules = [rule for rule in self._names if rule.matches(name)]
        if not rules or question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.NXDOMAIN)
            self._emit("dns", name=name, type=qtype, decision="deny", rule="not in [net].allow")
            self._note(name)
            return response.to_wire()
        try:
            addresses = self._lookup(name)
        except LookupFailed as failure:
            response.set_rcode(dns.rcode.SERVFAIL)
            self._emit("dns", name=name, type=qtype, decision="allow", rule=rules[0].origin,
                       error=str(failure))
            return response.to_wire()
        if not addresses:
            response.set_rcode(dns.rcode.NXDOMAIN)
        usable, refused = [], []
        try:
            own = _host_addresses()
        except (OSError, ValueError) as err:  # unreadable, or not in the kernel's format
            response.set_rcode(dns.rcode.SERVFAIL)  # nothing is pinned without knowing the host's
            self._emit("dns", name=name, type=qtype, decision="allow", rule=rules[0].origin,
                       error=f"the host's addresses: {getattr(err, 'strerror', None) or err}")
            return response.to_wire()
        for address in addresses:
            ip = _unmapped(ipaddress.ip_address(address))
            if _loopback(ip):
                usable.append(address)  # the sandbox's own loopback: nothing to pin (see the module's docstring)
                continue
            why = self._unpinnable(ip, own)
            if why:
                refused.append(f"{address}: {why}")
                self._note(f"{name} {address}", f"viewbox: {address} for {name} not allowed: {why}")
                continue
            usable.append(address)
            for rule in rules:
                try:
                    self._pin(address, rule.port_min, rule.port_max, rule.origin, name)
                except OSError as err:
                    response.set_rcode(dns.rcode.SERVFAIL)  # answered only once it can be used
                    self._emit("dns", name=name, type=qtype, decision="allow", rule=rule.origin,
                               error=f"pin {address}: {err.strerror}")
                    return response.to_wire()
        # an A query gets the IPv4 addresses, AAAA the IPv6 ones, any other type none
        given = [address for address in usable if qtype in ("A", "AAAA") and (":" in address) == (qtype == "AAAA")]
        if given:
            rrset = dns.rrset.from_text_list(question.name, ANSWER_TTL, dns.rdataclass.IN, question.rdtype,
                                             given[:MAX_ADDRESSES])
            response.answer.append(rrset)
        details = {"refused": refused} if refused else {}
        self._emit("dns", name=name, type=qtype, decision="allow", rule=rules[0].origin,
                   addresses=given[:MAX_ADDRESSES], **details)
        return response.to_wire()

    def _unpinnable(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, own: tuple[Network, ...]) -> str:
        """Why an answer's address must not be pinned ("" if it may be): see the module's docstring."""
        if any(ip in network for network in own):
            return "one of the host's own addresses"
        if ip.is_link_local:
            return "a link-local address"
        if ip.is_multicast or ip == _BROADCAST:
            return "not a unicast address"
        if not ip.is_global and not any(ip in network for network in self._networks):
            return "not globally routable, and no [net].allow address rule covers it"
        return ""

    def _note(self, key: str, text: str = "") -> None:
        """One line on the deny-note fd (`text`, by default a denied lookup of `key`), once per key."""
        if self._note_fd < 0:
            return
        with self._lock:
            if key in self._noted or len(self._noted) >= MAX_NOTED:
                return
            self._noted.add(key)
        try:
            os.write(self._note_fd, f"{text or f'viewbox: denied lookup of {key}: not in [net].allow'}\n".encode())
        except OSError:
            pass

    # --- resolving, on the host's side ----------------------------------------------

    def _lookup(self, name: str) -> list[str]:
        """Every address of `name` (IPv4 and IPv6), from the cache if recent (a failure too)."""
        # one lookup per name at a time: the A and AAAA queries a program sends together share
        # it (each asks for both families); striped, so that no name leaves a lock behind
        with self._gates[hash(name) % len(self._gates)]:
            now = time.monotonic()
            with self._lock:
                cached = self._cache.get(name)
            if cached and cached[0] > now:
                if isinstance(cached[1], LookupFailed):
                    raise cached[1]
                return cached[1]
            result: list[str] | LookupFailed
            try:
                result = self._ask_servers(name) if self._servers else _ask_host(name)
            except LookupFailed as failure:
                result = failure
            with self._lock:
                self._cache.pop(name, None)  # re-added last: the oldest entries go first
                self._cache[name] = (now + (FAILED_TTL if isinstance(result, LookupFailed) else ANSWER_TTL), result)
                while len(self._cache) > MAX_CACHED:  # a flood of names (with "*") stays bounded
                    del self._cache[next(iter(self._cache))]
            if isinstance(result, LookupFailed):
                raise result
            return result

    def _ask_servers(self, name: str) -> list[str]:
        found: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            query = dns.message.make_query(name, rdtype)
            failures = []
            for address, port in self._servers:
                try:
                    answer = dns.query.udp(query, address, port=port, timeout=UPSTREAM_TIMEOUT)
                except (dns.exception.DNSException, OSError) as err:
                    failures.append(f"{address}:{port}: {err or type(err).__name__}")
                    continue
                if answer.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    failures.append(f"{address}:{port}: {dns.rcode.to_text(answer.rcode())}")
                    continue
                try:
                    # the records of the asked name, or of the end of its CNAME chain, only
                    assert isinstance(answer, dns.message.QueryMessage)  # the reply to a query
                    owned = answer.resolve_chaining().answer
                except dns.exception.DNSException as err:
                    failures.append(f"{address}:{port}: {err}")
                    continue
                found += [rdata.to_text() for rdata in owned or ()]
                break
            else:
                raise LookupFailed(f"no DNS server of [net].dns answered for {name}: {'; '.join(failures)}")
        return list(dict.fromkeys(found))


def _ask_host(name: str) -> list[str]:
    """`name`'s addresses as the host resolves them for its own programs."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        if err.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return []
        raise LookupFailed(f"the host's resolver failed for {name}: {err.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)))


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it reaches."""
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def _loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_loopback or ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK)


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host_addresses() -> tuple[Network, ...]:
    """What the host's network (viewbox's namespace) delivers to the host itself, read afresh
    for each answer (interfaces come and go): IPv4 from the kernel's local routes (each
    interface's address, and whole local ranges), IPv6 from its address list. Raises OSError
    when they cannot be read."""
    found: set[Network] = set()
    with open("/proc/net/fib_trie") as trie:
        leaf = ""
        for line in trie:
            words = line.split()
            if words[:1] == ["|--"] and len(words) == 2:
                leaf = words[1]                    # "|-- 192.0.2.2": the prefixes below are its
            elif words[1:] == ["host", "LOCAL"] and words[0].startswith("/") and leaf:
                found.add(ipaddress.IPv4Network(f"{leaf}{words[0]}", strict=False))
    try:
        with open("/proc/net/if_inet6") as inet6:
            found.update(ipaddress.IPv6Network(ipaddress.IPv6Address(bytes.fromhex(line.split()[0])))
                         for line in inet6 if line.strip())
    except FileNotFoundError:
        pass  # IPv6 is off: the host has no IPv6 address
    return tuple(found)


def _split_server(server: str) -> tuple[str, int]:
    """"127.0.0.1:5353" or "[::1]:53" (as [net].dns normalises them) into address and port."""
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)
