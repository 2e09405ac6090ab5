"""The `routescript` command: run, check, db, --version.

    routescript run CFG [-u USER] [-g GROUP] [-P PIDFILE] [--log-level L] [--listen SOCKET]...
                                         load CFG and serve in the foreground (-F/--foreground, the only
                                         mode), logs to stderr; as USER/GROUP once the SIP sockets are
                                         bound; the flags override the script (docs/operations.md)
    routescript check CFG [--syntax-only]
                                         every error as `file:line:col: message` + the line + a caret,
                                         then `aborting: N errors, M warnings` (exit 1), or
                                         `CFG: OK (N routes, M modules)` (exit 0)
    routescript test FILE... [--junit-xml F] [--target HOST:PORT] [-k NAME] [-v]
                                         run YAML scenarios against the script they name: in process
                                         on a virtual clock, or against a live server over UDP
                                         (docs/testing-scripts.md); exit 1 when one fails
    routescript db init URL [TABLE...]   create OpenSIPS's presence tables in URL (sqlite:// or postgres://),
                                         or the TABLEs named (acc missed_calls, dialog, location, ...)
    routescript db subscriber add|passwd|rm URL USER@DOMAIN [PASSWORD] [--plain-text]
                                         write the subscriber table as opensips-cli's `user` commands
                                         (password prompted, or read from stdin, when not given)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from routescript.core.overrides import RunOptions
    from routescript.script.diagnostics import HasSeverity



def _version_text() -> str:
    try:
        from importlib.metadata import version
        return version("routescript")
    except Exception:  # noqa: BLE001 - not installed (a source checkout): the package's own version
        return getattr(sys.modules.get("routescript"), "__version__", "0.1.0")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="routescript",
                                description="SIP presence server programmed by an OpenSIPS-style route "
                                            "script")
    p.add_argument("--version", action="version", version=f"routescript {_version_text()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="load a configuration and serve in the foreground")
    run.add_argument("cfg", metavar="CFG")
    run.add_argument("-u", "--user", metavar="USER",
                     help="run as USER (name or uid) once the SIP sockets are bound; overrides the "
                          "script's `user`. Needs root. The modules' files (SQLite database, MI FIFO) "
                          "are then opened as USER")
    run.add_argument("-g", "--group", metavar="GROUP",
                     help="run with group GROUP (name or gid; default: USER's primary group); "
                          "overrides the script's `group`")
    run.add_argument("-P", "--pid-file", metavar="FILE",
                     help="write the main process's id to FILE once the sockets are bound, remove it at "
                          "exit (OpenSIPS -P); overrides the script's `pid_file`")
    run.add_argument("--log-level", metavar="LEVEL",
                     help="log_level: -3 .. 4 or L_ALERT .. L_DBG; overrides the script's")
    run.add_argument("-l", "--listen", metavar="SOCKET", action="append", default=[],
                     help="also listen on SOCKET, [proto:]host[:port] as a `socket =` line (OpenSIPS -l); "
                          "repeatable")
    run.add_argument("-t", "--chroot", metavar="DIR",
                     help="chroot to DIR once the sockets are bound, before switching user (OpenSIPS -t); "
                          "the database, FIFO and pid file paths are then inside DIR; overrides the "
                          "script's `chroot` (docs/operations.md)")
    run.add_argument("-w", "--wdir", metavar="DIR",
                     help="the working directory, entered at start (inside DIR of --chroot when given; "
                          "OpenSIPS -w); overrides the script's `wdir`")
    run.add_argument("-F", "--foreground", action="store_true",
                     help="serve in the foreground: the default and only mode (OpenSIPS -F); the "
                          "service manager (systemd, a container) keeps the process, there is no "
                          "daemonizing fork")
    chk = sub.add_parser("check", help="check a configuration and exit")
    chk.add_argument("cfg", metavar="CFG")
    chk.add_argument("--syntax-only", action="store_true",
                     help="only parse; do not load modules or resolve names")
    tst = sub.add_parser("test", help="run YAML scenarios that test a script (docs/testing-scripts.md)")
    tst.add_argument("files", metavar="FILE", nargs="+", help="scenario files (*.test.yaml)")
    tst.add_argument("--junit-xml", metavar="PATH", help="also write a JUnit XML report")
    tst.add_argument("--target", metavar="HOST:PORT",
                     help="run against a live server over UDP instead of in process (real time)")
    tst.add_argument("-k", metavar="NAME", dest="keyword", help="only scenarios whose name contains NAME")
    tst.add_argument("-v", "--verbose", action="store_true", help="a line per scenario; the server's log too")
    from routescript.mi.cli import add_mi_subcommand

    add_mi_subcommand(sub)
    hp = sub.add_parser("hash-password", help="make a password hash for modparam(\"mi_http\", \"auth_user\")",
                        description="Read a password (prompted twice on a terminal, else the first line of "
                                    "standard input) and print its $scrypt$ hash, or USER:hash with USER.")
    hp.add_argument("user", metavar="USER", nargs="?", help="print USER:hash (an auth_user value or a line "
                    "of auth_users_file)")
    db = sub.add_parser("db", help="database tools")
    dbsub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND")
    init = dbsub.add_parser("init", help="create the OpenSIPS presence tables (or the tables named)")
    init.add_argument("url", metavar="URL")
    init.add_argument("tables", metavar="TABLE", nargs="*",
                      help="OpenSIPS table names (acc missed_calls, dialog, location, subscriber...); "
                           "default: the presence tables")
    subs = dbsub.add_parser("subscriber", help="add, re-password or remove a subscriber (auth_db)")
    subs.add_argument("action", choices=("add", "passwd", "rm"))
    subs.add_argument("url", metavar="URL")
    subs.add_argument("account", metavar="USER@DOMAIN")
    subs.add_argument("password", metavar="PASSWORD", nargs="?",
                      help="prompted (twice) on a terminal, else the first line of standard input")
    subs.add_argument("--plain-text", action="store_true",
                      help="also store the password itself (for modparam(\"auth_db\", \"calculate_ha1\", 1))")
    return p


def cmd_check(cfg: str, syntax_only: bool) -> int:
    from routescript.core.server import LoadError, Server

    if syntax_only:
        from routescript.script import ScriptError, check_script, parse_file
        try:
            ast = parse_file(cfg)
        except ScriptError as exc:
            _print_failure(exc.diagnostics, exc.omitted)
            return 1
        except OSError as exc:
            print(f"{cfg}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            return 1
        # the language's rules that need no module (`break` outside a loop or switch, route(x) with no
        # route[x], bad regexes, a route defined twice): the full check refuses them too, so both agree
        errors = check_script(ast)
        if errors:
            in_order = sorted([*errors, *ast.warnings], key=lambda d: (d.pos.file, d.pos.line, d.pos.col))
            _print_failure(in_order, 0)
            return 1
        for w in getattr(ast, "warnings", ()) or ():
            print(w, file=sys.stderr)
        print(f"{cfg}: syntax OK ({_n(len(ast.routes), 'route')})")
        return 0
    server = Server()
    try:
        loaded = server.load(cfg)
    except LoadError as exc:
        _print_failure(exc.diagnostics, exc.omitted)
        return 1
    for w in loaded.warnings:
        print(w, file=sys.stderr)
    print(f"{cfg}: OK ({_n(loaded.route_count, 'route')}, {_n(len(server.modules.instances), 'module')})")
    return 0


def _print_failure(diagnostics: Sequence[HasSeverity], omitted: int) -> None:
    """Every diagnostic, then the summary: `(N more errors not shown)` and `aborting: 3 errors, 1 warning`."""
    from routescript.script.diagnostics import summary_lines, without_repeats

    shown = without_repeats(diagnostics)
    for d in shown:
        print(d, file=sys.stderr)
    for line in summary_lines(shown, omitted):
        print(line, file=sys.stderr)


def cmd_test(files: list[str], junit_xml: str | None, target: str | None, keyword: str | None,
             verbose: bool) -> int:
    import time

    from routescript.testing.scenario import ERROR, FAILED, run_files
    from routescript.testing.scenario.report import Reporter, write_junit

    address: tuple[str, int] | None = None
    if target is not None:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            print(f"routescript test: --target {target}: expected HOST:PORT (127.0.0.1:5060)",
                  file=sys.stderr)
            return 2
        address = (host.strip("[]"), int(port))
    reporter = Reporter(sys.stdout, verbose=verbose)
    started = time.perf_counter()
    results = run_files(files, target=address, keyword=keyword, echo_log=verbose, report=reporter.result)
    reporter.summary(results, time.perf_counter() - started)
    if junit_xml:
        write_junit(results, junit_xml)
    if any(r.outcome in (FAILED, ERROR) for r in results):
        return 1
    return 0 if results else 5   # pytest's "no tests collected"


def cmd_run(cfg: str, options: RunOptions | None = None) -> int:
    from routescript.core.log import LogSettings, setup_logging
    from routescript.core.server import install_event_loop_policy
    from routescript.workers.supervisor import run

    setup_logging(LogSettings())  # until the script's log_level is read
    install_event_loop_policy()
    try:
        # one process, or a supervisor and its worker processes (udp_workers > 1: docs/workers.md)
        return asyncio.run(run(cfg, options))
    except KeyboardInterrupt:
        return 130


def cmd_db_init(url: str, tables: list[str] | None = None) -> int:
    from routescript.db import DatabaseError, init_schema

    try:
        lines = asyncio.run(init_schema(url, tables or None))
    except DatabaseError as exc:
        print(f"routescript db init: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def cmd_db_subscriber(action: str, url: str, account: str, password: str | None, plain_text: bool) -> int:
    import getpass

    from routescript.db import DatabaseError
    from routescript.modules.auth_db import subscribers as subs

    try:
        acct = subs.Account.parse(account)
        if action != "rm" and password is None:
            if sys.stdin.isatty():
                password = getpass.getpass("Password: ")
                if getpass.getpass("Again: ") != password:
                    raise subs.SubscriberError("the passwords differ")
            else:
                password = sys.stdin.readline().rstrip("\r\n")
        if action == "add":
            asyncio.run(subs.add(url, acct, password or "", plain_text=plain_text))
        elif action == "passwd":
            asyncio.run(subs.passwd(url, acct, password or "", plain_text=plain_text))
        else:
            asyncio.run(subs.remove(url, acct))
    except (subs.SubscriberError, DatabaseError) as exc:
        print(f"routescript db subscriber {action}: {exc}", file=sys.stderr)
        return 1
    done = {"add": "added", "passwd": "changed the password of", "rm": "removed"}[action]
    print(f"{done} {acct.username}@{acct.domain}")
    return 0


def cmd_hash_password(user: str | None) -> int:
    import getpass

    from routescript.mi.auth import hash_password

    if user is not None and (not user or ":" in user or any(c.isspace() for c in user)):
        print("routescript hash-password: a user name has no ':' and no spaces", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("routescript hash-password: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("routescript hash-password: empty password", file=sys.stderr)
        return 1
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        print(f"routescript hash-password: {exc}", file=sys.stderr)
        return 1
    print(f"{user}:{hashed}" if user is not None else hashed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        from routescript.core.overrides import RunOptions

        return cmd_run(args.cfg, RunOptions(args.user, args.group, args.pid_file, args.log_level,
                                            tuple(args.listen), args.chroot, args.wdir))
    if args.command == "check":
        return cmd_check(args.cfg, args.syntax_only)
    if args.command == "test":
        return cmd_test(args.files, args.junit_xml, args.target, args.keyword, args.verbose)
    if args.command == "mi":
        from routescript.mi.cli import run_mi

        return run_mi(args)
    if args.command == "hash-password":
        return cmd_hash_password(args.user)
    if args.command == "db":
        if args.db_command == "init":
            return cmd_db_init(args.url, args.tables)
        if args.db_command == "subscriber":
            return cmd_db_subscriber(args.action, args.url, args.account, args.password, args.plain_text)
        parser.parse_args(["db", "--help"])
        return 2
    parser.print_help(sys.stderr)
    return 2


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


if __name__ == "__main__":
    sys.exit(main())
