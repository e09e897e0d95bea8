"""The `viewbox` command: a thin layer over the Python API."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import PolicyErrors, ViewboxError

if TYPE_CHECKING:
    from .sandbox import Process, Sandbox

#: signals `viewbox run` passes on to the command
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
#: job control: the sandbox's init stops every process of it on these, and SIGCONT continues them
JOB_STOPS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)

MAIN_HELP = """\
viewbox runs a command in its own view of the world: a filesystem, process
tree, network and identity of its own, enforced by the kernel (namespaces,
Landlock, seccomp) and described by a policy file.

examples:
  viewbox run -- sh -c 'id; hostname; ls /'        default policy: host read-only,
                                                   private /tmp, no home dirs, no network
  viewbox run --rw . -- make                        let a build write the current directory
  viewbox run --policy python -- python3 job.py     shipped policy: writable work dir
  viewbox run --policy ./my.toml -- ./server        your own policy file
  viewbox check my.toml                             validate a policy (FILE:LINE: field: message)
  viewbox show --policy python --rw /data           the effective, fully merged policy
  viewbox learn -o job.toml -- python3 job.py       write the policy a command needs
  viewbox doctor                                    what this kernel and user can enforce

exit status of `run`: the command's; 128+N if a signal N killed it; 124 if
a limit (--memory, --pids, --timeout, [limits]) ended it; 125 if viewbox
could not set the sandbox up; 126 if the command could not be executed; 127
if it was not found inside the view. Any verb exits with 2 when its command
line is wrong (usage).
"""

RUN_HELP = """\
Runs CMD inside a sandbox. The policy (default: the embedded `default`) sets
the view; the flags below add to it or override it. stdin, stdout and stderr
pass through; SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 and SIGWINCH are
forwarded to the command; Ctrl-Z (SIGTSTP, SIGTTIN, SIGTTOU) stops the whole
sandbox with viewbox, and fg/bg (SIGCONT) continue it, the time stopped not
counting against --timeout. The environment starts clean (PATH, LANG, TERM,
HOME) plus what the policy's [env] or --env name. One line on stderr says how
many processes were still running when the command exited (they are killed),
and when the current directory is hidden, so that the command starts in /.

examples:
  viewbox run -- sh -c 'id; hostname; ls /'
  viewbox run --rw "$PWD" --workdir "$PWD" -- make -j2
  viewbox run --hide /etc/ssl --env LANG=C -- python3 -c 'import ssl'
  viewbox run --tmpfs /scratch:512M -- ./fill-scratch
  viewbox run --rw "$PWD" --deny '**/*.pem' --allow "read:$PWD/ca.pem" -- make
  viewbox run --net host -- curl http://localhost:8080/   (unsafe: shares the host network)
  viewbox run --listen web=tcp:0.0.0.0:8080 -- ./socket-activated-daemon
  viewbox run --publish 8080:80 -- nginx -g 'daemon off;'
  viewbox run --allow-net 10.1.2.0/24:5432 -- ./job      (reaches that network's port 5432 only)
  viewbox run --allow-net pypi.org:443 -- pip download six   (that name resolves, nothing else)
  sudo viewbox run --net private -- curl https://example.org/   (own interface, NAT)
  viewbox run --audit events.jsonl -- ./untrusted
  viewbox run --memory 256M --pids 64 --timeout 10m --report usage.json -- ./job

When a limit ends the run, every process of the sandbox is killed, one line
says which limit (`viewbox: killed: memory limit 256 MiB reached (peak 256
MiB)`) and the exit status is 124.
"""


PATH_RULES_HELP = """\
A rule is [ACCESS:]GLOB. ACCESS: read (open for reading, stat, list), write
(create, change, delete, rename), exec (execve), or several joined by ","
as in read,write; without it, all three. GLOB: an absolute path or one
starting with **/, where * ? [...] match within one name, ** matches any
number of directories, \\ escapes. Rules see the real path (symlinks and ..
resolved). The last rule matching a path decides: the policy's rules, then
every --deny, then --ask, then --allow. Field reference: policies/README.md."""

LEARN_HELP = """\
Runs CMD once under the base policy (default: the embedded `default`), with
every filesystem and exec call audited, and writes OUT: a standalone policy
that starts from an empty root and shows only what the run used, never more
than the base showed. What was only read is read-only; files written and
directories the command created, removed or renamed entries in are
writable; system trees (/usr/lib/python3.11, /usr/lib/x86_64-linux-gnu,
/usr/share/zoneinfo, ...) become one directory when several paths under one
were used, while your own files stay precise (the files, or the directory
the command listed or wrote in). Executables and their interpreters, /proc,
/dev and a private /tmp are included when used. Paths the command probed
that did not exist are left out. The network is learned only when asked:
with --learn-net the command may reach any name and any address outside
the host (not its loopback) while it runs, and OUT's [net].allow lists the
destinations it used ("pypi.org:443" where it looked the address up);
without it OUT has [net] mode = "none" and no allowlist. OUT is checked by
the policy loader before it is written; the exit status is the command's.

examples:
  viewbox learn -o job.toml --policy python -- python3 job.py in.csv out/
      learn within `python` (the current directory writable); then replay:
  viewbox run --policy job.toml -- python3 job.py in.csv out/
  viewbox learn -o build.toml --policy ./base.toml -- make
      within your own base policy, e.g. one extending "default" with rw = ["/src"]
  viewbox learn -o build.toml --force -- make          replace build.toml
  viewbox learn -o fetch.toml --learn-net -- pip download six
      learn the package index's names too: OUT allows just those

The base policy bounds what the run may do: files it hides or makes read-only
stay so. A command that reads a path only on some runs (another input, an
error path) needs it added by hand, or a policy learned from such a run.
"""


def _add_view_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("view (added to, or overriding, the policy)")
    g.add_argument("--policy", "-p", metavar="P",
                   help="shipped policy name (default, strict, python, daemon) or a policy file path")
    g.add_argument("--ro", action="append", default=[], metavar="PATH", help="bind PATH read-only (repeatable)")
    g.add_argument("--rw", action="append", default=[], metavar="PATH", help="bind PATH read-write (repeatable)")
    g.add_argument("--hide", action="append", default=[], metavar="PATH", help="make PATH empty inside, also inside a wider --ro or --rw (repeatable)")
    g.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:SIZE]",
                   help="a private tmpfs on PATH, e.g. /scratch:512M (repeatable)")
    g.add_argument("--workdir", "-w", metavar="DIR", help="working directory inside")
    g.add_argument("--hostname", metavar="H", help="hostname inside")
    g.add_argument("--uid", type=int, metavar="N", help="user id inside")
    g.add_argument("--gid", type=int, metavar="N", help="group id inside")
    g.add_argument("--net", choices=["none", "private", "host"],
                   help="none: own network namespace, loopback only (default); private (root): own namespace "
                        "with a veth pair to the host and NAT; host: share the host's (unsafe)")
    g.add_argument("--listen", action="append", default=[], metavar="[NAME=]tcp:ADDR:PORT|unix:PATH",
                   help="bind this socket on the host and pass it in, systemd's way (LISTEN_FDS, from fd 3), "
                        "e.g. tcp:127.0.0.1:8080, web=tcp:8080, unix:/run/app.sock (repeatable)")
    g.add_argument("--publish", action="append", default=[], metavar="[ADDR:]HOST_PORT:PORT",
                   help="forward the host's HOST_PORT (on every address unless ADDR) to 127.0.0.1:PORT "
                        "inside, e.g. 8080:80 (repeatable)")
    g.add_argument("--allow-net", action="append", default=[], metavar="ADDR[/PREFIX]:PORT|NAME:PORT",
                   help="let the sandbox connect to this destination outside (with --net none): "
                        "e.g. 10.1.2.0/24:5432, 127.0.0.1:8080, [::1]:443, 10.0.0.5:*, pypi.org:443, "
                        "*.example.com:443; names resolve inside (through viewbox) and nothing else "
                        "does (repeatable)")
    g.add_argument("--dns", action="append", default=[], metavar="ADDR[:PORT]",
                   help="resolve --allow-net's names with this DNS server instead of the host's resolver "
                        "(repeatable: asked in turn)")
    g.add_argument("--env", "-e", action="append", default=[], metavar="K=V",
                   help="set K=V inside; a bare K copies the host's value (repeatable)")
    r = p.add_argument_group("path rules (after the policy's [fs] deny/ask/allow)", description=PATH_RULES_HELP)
    r.add_argument("--deny", action="append", default=[], metavar="[ACCESS:]GLOB",
                   help="refuse that access to matching paths: the call fails with EACCES, "
                        "e.g. '**/*.pem', 'write:/etc/**' (repeatable)")
    r.add_argument("--ask", action="append", default=[], metavar="[ACCESS:]GLOB",
                   help="ask on this terminal (without one: refuse), e.g. 'exec:/usr/bin/curl' (repeatable)")
    r.add_argument("--allow", action="append", default=[], metavar="[ACCESS:]GLOB",
                   help="let through what an earlier rule refuses or asks about, "
                        "e.g. \"read:$PWD/ca.pem\" (repeatable)")
    q = p.add_argument_group("limits (override the policy's [limits]; "
                             "--memory, --cpus, --pids and --timeout also take \"unlimited\")")
    q.add_argument("--memory", metavar="SIZE",
                   help="memory of the whole sandbox, e.g. 256M (a unit B, K, M, G or T is required; 4M at least; "
                        "the default policy's: 4G)")
    q.add_argument("--cpus", metavar="N", help="CPU cores, e.g. 0.5 (needs a cgroup)")
    q.add_argument("--pids", type=_integer_or_word, metavar="N",
                   help="processes and threads, the sandbox's init included (the default policy's: 1024)")
    q.add_argument("--timeout", metavar="DURATION", help="wall time, e.g. 30s, 10m, 1h30m")
    q.add_argument("--disk", metavar="SIZE", help="bytes each writable tmpfs may hold, e.g. 1G (a unit is required)")
    t = p.add_argument_group("time (override the policy's [time])")
    t.add_argument("--time-start", metavar="INSTANT",
                   help="the sandbox's clock starts at INSTANT and runs on, e.g. 2009-04-21T12:00:00Z")
    t.add_argument("--time-offset", metavar="OFFSET", help="the host's time shifted by OFFSET, e.g. -1d, +3d4h, -17y")
    t.add_argument("--time-rate", type=float, metavar="RATE",
                   help="virtual seconds per real second, e.g. 10 (sleeps and timeouts scale with it)")
    t.add_argument("--time-frozen", action="store_const", const=True,
                   help="the clock stands still but for the sandbox's own sleeps, which jump it")


def _integer_or_word(text: str) -> int | str:
    """--pids 64 is the integer 64; --pids unlimited stays a word (the policy check says what is allowed)."""
    try:
        return int(text)
    except ValueError:
        return text


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("ro", "rw", "hide", "tmpfs"):
        if getattr(args, key):
            out[key] = [os.path.abspath(x) if key != "tmpfs" else x for x in getattr(args, key)]
    if args.workdir:
        out["workdir"] = os.path.abspath(args.workdir)
    for key in ("hostname", "uid", "gid", "net", "memory", "cpus", "pids", "timeout", "disk",
                "time_start", "time_offset", "time_rate", "time_frozen"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    for key in ("listen", "publish", "allow_net", "dns"):
        if getattr(args, key):
            out[key] = list(getattr(args, key))
    for key in ("deny", "ask", "allow"):  # globs, kept as written ("**/x" is no path to make absolute)
        if getattr(args, key):
            out[key] = list(getattr(args, key))
    if args.env:
        env: dict[str, str] = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not key:
                raise ViewboxError(f"--env {item!r}: expected K=V or K")
            if sep:
                env[key] = value
            elif key in os.environ:
                env[key] = os.environ[key]
        out["env"] = env
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="viewbox", description=MAIN_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"viewbox {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")

    run = sub.add_parser("run", help="run a command in a sandbox", description=RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         usage="viewbox run [--policy P] [flags] -- CMD [ARGS...]")
    _add_view_flags(run)
    run.add_argument("--audit", metavar="FILE", help="append JSON-lines events (start, exit, errors) to FILE")
    run.add_argument("--report", metavar="FILE",
                     help="write the usage report (JSON: level, limits, usage, the limit that ended the run) to FILE")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    check = sub.add_parser("check", help="validate policy files",
                           description="Validates each policy FILE (and what it extends) as `run` would, "
                                       "also looking on this host for the paths it binds. Prints "
                                       "FILE:LINE: field: message for every mistake, all in one pass; exit "
                                       "status 1 if any. A FILE naming no [viewbox].extends extends "
                                       "\"default\"; `ok` says so.")
    check.add_argument("files", nargs="+", metavar="FILE")

    show = sub.add_parser("show", help="print the effective policy",
                          description="Prints the effective policy, fully merged (extends, then the "
                                      "flags), as TOML with where each value came from.")
    _add_view_flags(show)
    show.add_argument("--syscalls", action="store_true",
                      help="also list the syscalls the seccomp layer denies, and why")

    learn = sub.add_parser("learn", help="run a command and write the policy it needs",
                           description=LEARN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                           usage="viewbox learn -o OUT [--policy BASE] [--force] -- CMD [ARGS...]")
    learn.add_argument("-o", "--output", required=True, metavar="OUT", help="the policy file to write")
    learn.add_argument("--policy", "-p", metavar="BASE",
                       help="the policy the run happens in (default: default): a shipped name or a file")
    learn.add_argument("--force", action="store_true", help="replace OUT if it exists")
    learn.add_argument("--learn-net", action="store_true",
                       help="let the command reach any name and address outside the host while it is learned, "
                            "and write the destinations it used to [net].allow (by name where it looked "
                            "the address up)")
    learn.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    doctor = sub.add_parser("doctor", help="report what this kernel and user can enforce",
                            description="Probes namespaces, seccomp, Landlock, cgroups and pidfd for the "
                                        "current user and says what that means for policies.")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def spawn_forwarding_signals(box: Sandbox, argv: Sequence[str]) -> Process:
    """Spawns `argv`, forwarding the FORWARDED signals this process gets to it;
    they are held back from the moment the command may exist until the handler
    is in place (the sandbox's init unblocks its own signals itself). Python runs
    a handler between bytecodes: a signal arriving just before `wait` blocks in
    poll() is seen there through the wakeup fd, not when the command ends.
    Job control: SIGTSTP, SIGTTIN, SIGTTOU stop the sandbox, then this process, as a
    stopped job; SIGCONT (fg, bg) continues both."""
    held = (*FORWARDED, *JOB_STOPS, signal.SIGCONT)
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        proc = box.spawn(argv)
        wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        proc.wakeup_fd = wakeup_r
        for sig in (*FORWARDED, signal.SIGCONT):
            signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))

        def stop(signum: int, _frame: object) -> None:
            proc.send_signal(signum)  # the sandbox's init stops every process of it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # returns once continued; the SIGCONT handler follows
            signal.signal(signum, stop)

        for sig in JOB_STOPS:
            signal.signal(sig, stop)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    for message in proc.plan.degraded:
        print(f"viewbox: running degraded: {message}", file=sys.stderr)
    if proc.hidden_cwd:
        print(f"viewbox: the current directory {proc.hidden_cwd} is hidden in the view: "
              f"the command starts in /", file=sys.stderr)
    return proc


def _cmd_run(args: argparse.Namespace) -> int:
    from .policy import load_policy
    from .quota import LIMIT_EXIT_STATUS, limits_dict
    from .sandbox import Sandbox

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ViewboxError("no command given (usage: viewbox run [flags] -- CMD [ARGS...])")
    policy = load_policy(args.policy, overrides=_overrides(args), override_origin="cli")
    report = _open_report(args.report) if args.report else None
    # ask rules: a person at the terminal answers; without one they deny
    from .ask import terminal_prompt
    from .plan import RuleAction

    box = Sandbox(policy=policy, audit=args.audit,
                  on_request=terminal_prompt() if any(rule.action == RuleAction.ASK for rule in policy.fs.rules)
                  else None, deny_notes=True)
    try:
        proc = spawn_forwarding_signals(box, command)
    except ViewboxError as e:
        if report:
            with report:
                import json

                json.dump({"argv": command, "exit_status": e.exit_code, "error": str(e)}, report, indent=2)
        raise
    returncode = proc.wait()
    usage = proc.usage
    assert usage is not None
    if usage.limit:
        print(f"viewbox: killed: {usage.reason}", file=sys.stderr)
    elif proc.broker_lost:
        print("viewbox: killed: the sandbox's broker, which performs its path calls, was gone", file=sys.stderr)
    elif proc.left_running:
        print(f"viewbox: the command exited with {proc.left_running} "
              f"{'process' if proc.left_running == 1 else 'processes'} of the sandbox still running; "
              f"{'it was' if proc.left_running == 1 else 'they were'} killed", file=sys.stderr)
    status = LIMIT_EXIT_STATUS if usage.limit else 128 - returncode if returncode < 0 else returncode
    if report:
        with report:
            import json

            json.dump({"argv": list(proc.argv), "returncode": returncode, "exit_status": status,
                       "left_running": proc.left_running, "limit": usage.limit, "reason": usage.reason, "level": usage.level,
                       "limits": limits_dict(policy.limits), "usage": usage.to_dict()}, report, indent=2)
            report.write("\n")
    return status


def _open_report(path: str) -> Any:
    """The --report file, opened before the run so a bad path fails before anything runs."""
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as err:
        raise ViewboxError(f"--report {path}: {os.strerror(err.errno) if err.errno else err}") from None


def _cmd_check(args: argparse.Namespace) -> int:
    from .policy import check_policy_file

    failed = False
    for path in args.files:
        try:
            policy = check_policy_file(path)
        except PolicyErrors as e:
            failed = True
            for error in e.errors:
                print(error, file=sys.stderr)
        except ViewboxError as e:
            failed = True
            print(e, file=sys.stderr)
        else:
            implicit = " (it names no [viewbox].extends, so it extends \"default\")" if path in policy.implicit else ""
            print(f"{path}: ok{implicit}")
    return 1 if failed else 0


def _cmd_show(args: argparse.Namespace) -> int:
    from . import core
    from .policy import load_policy, render_policy

    policy = load_policy(args.policy, overrides=_overrides(args), override_origin="cli")
    sys.stdout.write(render_policy(policy))
    if args.syscalls:
        from .policy import denied_syscall_groups

        denied = denied_syscall_groups(policy)
        print("\n# seccomp: denied syscalls (EPERM unless noted), from the C core's syscall table")
        for row in core.syscall_table():
            if row.group in denied or row.group == "always":
                print(f"#   {row.name:<20} [{row.group}] {row.note}")
        if policy.time.active:
            from .views.time import file_times_on_sandbox_clock

            traps = core.time_traps(rate=policy.time.rate, frozen=policy.time.frozen, strict=policy.time.strict,
                                    file_times=file_times_on_sandbox_clock(policy))
            print("\n# time view: clock reads answered by the supervisor, other calls trapped to the "
                  "sandbox's init (timeouts rewritten)")
            for name, trap, note in core.time_table():
                if trap & traps:
                    print(f"#   {name:<20} {note}")
    return 0


def _cmd_learn(args: argparse.Namespace) -> int:
    from .learn import learn

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ViewboxError("no command given (usage: viewbox learn -o OUT [--policy BASE] -- CMD [ARGS...])")
    return learn(command, out=args.output, base=args.policy, force=args.force, learn_net=args.learn_net)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import probe, render

    result = probe()
    if args.json:
        import json

        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render(result))
    return 0


def _attach_negative_offsets(argv: list[str]) -> list[str]:
    """`--time-offset -1d` as `--time-offset=-1d`: argparse takes "-1d" for an option otherwise."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--":
            return out + argv[i:]
        if argv[i] == "--time-offset" and i + 1 < len(argv):
            out.append(f"--time-offset={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_negative_offsets(sys.argv[1:] if argv is None else list(argv)))
    if args.verb is None:
        parser.print_help()
        return 2
    handler = {"run": _cmd_run, "check": _cmd_check, "show": _cmd_show, "doctor": _cmd_doctor,
               "learn": _cmd_learn}[args.verb]
    try:
        return handler(args)
    except PolicyErrors as e:
        for error in e.errors:
            print(f"viewbox: {error}", file=sys.stderr)
        return e.exit_code
    except ViewboxError as e:
        print(f"viewbox: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`viewbox show --syscalls | head`): stop quietly, with the status
        # of a tool that SIGPIPE ended, and let nothing left in the buffer try again.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
        return 128 + signal.SIGPIPE


def console_main() -> None:
    """The `viewbox` command. When a verb is done nothing is left to clean up
    (the sandbox is reaped, its cgroups removed, the audit file closed), so the
    interpreter's own shutdown, which costs more than a spawn, is skipped."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # what was left in the buffer had no reader: as main() says it
        code = 128 + signal.SIGPIPE
    os._exit(code)


if __name__ == "__main__":
    console_main()
