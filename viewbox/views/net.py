"""The network view: the sandbox's own network namespace, or (explicitly, unsafely) the host's;
sockets passed in ([net].listen) and host ports forwarded in ([net].publish).

"none" gives a namespace with only loopback up; "host" shares the host's
interfaces, so the sandbox can reach everything the caller can. Listening
sockets are bound here, on the host, by viewbox (viewbox.sandbox) and work in
either mode: the sandbox only ever accepts on them. Published ports need the
sandbox's own namespace: with "host" a daemon's ports already are the host's.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from typing import TYPE_CHECKING

from viewbox.errors import PolicyError, PolicyErrors, SpawnError
from viewbox.plan import ListenSpec, PublishSpec

if TYPE_CHECKING:
    from viewbox.policy.model import Policy
    from viewbox.views import CompileContext


def contribute(policy: Policy, context: CompileContext) -> dict[str, object]:
    from viewbox.policy.model import expand  # the model imports views: at run time only

    net = policy.net
    errors: list[PolicyError] = []
    names: dict[str, int] = {}
    for index, sock in enumerate(net.listen):
        if sock.name in names:
            errors.append(policy.origin("net.listen", index).error(
                f"[net].listen[{index}]", f"socket name {sock.name!r} is also [net].listen[{names[sock.name]}]'s "
                "(give one a name: \"NAME=tcp:...\")"))
        names.setdefault(sock.name, index)
    if net.mode == "host":
        errors += [policy.origin("net.publish", index).error(
            f"[net].publish[{index}]", 'publish needs the sandbox\'s own network (mode "none"): with mode '
            '"host" the daemon binds the host\'s ports itself') for index in range(len(net.publish))]
    if errors:
        raise PolicyErrors(errors)
    listen = tuple(ListenSpec(name=sock.name, kind=sock.kind, host=sock.host, port=sock.port,
                              path=expand(sock.path, cwd=context.cwd) if sock.path else "")
                   for sock in net.listen)
    publish = tuple(PublishSpec(host=port.host, host_port=port.host_port, port=port.port)
                    for port in net.publish)
    return {"unshare_net": net.mode == "none", "listen": listen, "publish": publish}


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


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bind_tcp(host: str, port: int, what: str) -> socket.socket:
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
