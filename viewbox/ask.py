"""Ask rules: the calls an `ask` rule holds, put to the caller's callback.

The supervisor (C, layer 3) holds such a call and queues a request; one
dispatcher thread per process waits for requests and runs the callback of
the sandbox each belongs to, every answer in a thread of its own, so a slow
answer (a person at a terminal) holds only that call: the sandbox's other
calls, and other sandboxes, go on.

    def on_request(request: viewbox.Request) -> viewbox.Decision:
        return viewbox.Decision.ALLOW_ONCE if request.access == ("read",) else viewbox.Decision.DENY

    viewbox.run(["./tool"], ask=["{cwd}/**"], on_request=on_request)
"""
from __future__ import annotations

import enum
import os
import select
import sys
import threading
from collections.abc import Callable

from . import core
from ._record import record

_ACCESS_WORDS = ((1, "read"), (2, "write"), (4, "exec"))  # VB_ACCESS_*


class Decision(enum.IntEnum):
    """An answer to a Request (csrc: VB_ANSWER_*)."""

    DENY = 0          # this call fails with EACCES
    ALLOW_ONCE = 1    # this call goes ahead; the next one is asked again
    ALLOW_ALWAYS = 2  # this call and every later one on the same path and access go ahead


@record
class Request:
    """A call an ask rule holds: which sandbox, who, what, and the rule."""

    sandbox: int               # the sandbox's id (as in its audit events)
    pid: int                   # the calling thread, as the host sees it
    syscall: str               # "openat", "stat", "unlink", ...
    path: str                  # what the call reached, inside the view (symlinks and ".." resolved)
    access: tuple[str, ...]    # ("read",), ("read", "write"), ("exec",), ...
    rule: str                  # where the ask rule was written


OnRequest = Callable[[Request], Decision]

_lock = threading.Lock()
_callbacks: dict[int, OnRequest] = {}
_dispatcher: threading.Thread | None = None


def register(sandbox_id: int, callback: OnRequest) -> None:
    """Routes the requests of `sandbox_id` to `callback` (from now until unregister)."""
    global _dispatcher
    with _lock:
        _callbacks[sandbox_id] = callback
        if _dispatcher is None:
            _dispatcher = threading.Thread(target=_dispatch, args=(core.supervisor(),), name="viewbox-ask",
                                           daemon=True)
            _dispatcher.start()


def unregister(sandbox_id: int) -> None:
    with _lock:
        _callbacks.pop(sandbox_id, None)


def _dispatch(supervisor: core.Supervisor) -> None:
    fd = supervisor.request_fd
    poller = select.poll()  # not select(): the fd may be past 1023 in a process holding many
    poller.register(fd, select.POLLIN)
    while True:
        poller.poll()
        try:
            os.read(fd, 8)
        except BlockingIOError:
            pass
        while (request := supervisor.next_request()) is not None:
            with _lock:
                callback = _callbacks.get(request.sandbox)
            threading.Thread(target=_answer, args=(supervisor, callback, request),
                             name="viewbox-ask-answer", daemon=True).start()


def _answer(supervisor: core.Supervisor, callback: OnRequest | None, held: core.Request) -> None:
    decision = Decision.DENY
    if callback is not None:
        request = Request(held.sandbox, held.pid, held.syscall, held.path,
                          tuple(word for bit, word in _ACCESS_WORDS if held.access & bit), held.rule)
        try:
            answer = callback(request)
            if isinstance(answer, Decision):
                decision = answer
            else:
                print(f"viewbox: on_request returned {answer!r}, not a viewbox.Decision: denied",
                      file=sys.stderr)
        except Exception as e:  # a failing callback denies; it must not leave the call hanging
            print(f"viewbox: on_request failed ({type(e).__name__}: {e}): denied", file=sys.stderr)
    supervisor.answer(held.token, int(decision))


def terminal_prompt() -> OnRequest | None:
    """For the CLI: a callback that asks on the controlling terminal, or None
    when there is none (ask rules then deny)."""
    try:  # a terminal is not seekable: one stream each way
        tty_in = open("/dev/tty", encoding="utf-8", errors="replace")
        tty_out = open("/dev/tty", "w", encoding="utf-8", errors="replace")
    except OSError:
        return None
    prompt_lock = threading.Lock()

    def on_request(request: Request) -> Decision:
        with prompt_lock:  # one question at a time on one terminal
            tty_out.write(f"viewbox: {request.syscall} wants to {'/'.join(request.access)} {request.path}\n"
                          f"  (rule {request.rule})  allow [o]nce, [a]lways, or [D]eny? ")
            tty_out.flush()
            reply = tty_in.readline().strip().lower()
        if reply in ("o", "once", "y", "yes"):
            return Decision.ALLOW_ONCE
        if reply in ("a", "always"):
            return Decision.ALLOW_ALWAYS
        return Decision.DENY

    return on_request
