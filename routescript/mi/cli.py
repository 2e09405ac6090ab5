"""`routescript mi COMMAND [args | name=value ...]`: run one MI command on a running server.

    routescript mi which                                  # http://127.0.0.1:8888/mi (httpd's default)
    routescript mi --url http://127.0.0.1:8870/mi uptime
    routescript mi --config /etc/routescript.cfg log_level 4
    routescript mi --fifo /tmp/opensips_fifo subs_phtable_list from=sip:bob* to=sip:alice*
    routescript mi get_statistics core: presence:           # array commands take their items positionally
    routescript mi --yaml pres_phtable_list
    routescript mi --user admin which                      # mi_http with basic auth: password prompted
    routescript mi --url http://admin:secret@127.0.0.1:8888/mi which

The result is printed as JSON (indented), or YAML with --yaml. A JSON-RPC error or a failure to reach
the server prints the message on stderr and exits 1. --config CFG finds the server the way CFG serves
MI: httpd's ip/port with mi_http's root, else (no mi_http) mi_fifo's fifo_name and reply_dir.

routescript/cli.py wires it with:
    from routescript.mi.cli import add_mi_subcommand, run_mi
    add_mi_subcommand(sub)                       # sub = the subparsers object
    if args.command == "mi": return run_mi(args)
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8888/mi"
PASSWORD_ENV = "ROUTESCRIPT_MI_PASSWORD"  # noqa: S105 - the name of a variable, not a password


def add_mi_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `mi` subcommand to an argparse subparsers object; returns its parser."""
    p: argparse.ArgumentParser = subparsers.add_parser("mi", help="run an MI command on a running server",
                              description="Run one MI command over JSON-RPC (HTTP or the MI FIFO).")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help=f"mi_http URL (default {DEFAULT_URL})")
    where.add_argument("--config", "-c", metavar="CFG",
                       help="find the server from CFG: its httpd/mi_http URL, else its mi_fifo FIFO")
    where.add_argument("--fifo", metavar="PATH", help="use the MI FIFO at PATH (mi_fifo's fifo_name)")
    p.add_argument("--reply-dir", default=None, help="where the reply FIFO is made (mi_fifo's reply_dir, "
                   "default /tmp)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    p.add_argument("--user", "-u", default=None, help="mi_http basic auth user (the password comes from "
                   f"--password, ${PASSWORD_ENV}, or a prompt)")
    p.add_argument("--password", default=None, help=f"the password (visible to `ps`: prefer ${PASSWORD_ENV} "
                   "or the prompt)")
    p.add_argument("--yaml", action="store_true", help="print YAML instead of JSON")
    p.add_argument("mi_command", metavar="COMMAND", help="the MI command (`which` lists them)")
    p.add_argument("mi_args", metavar="ARG", nargs="*", help="positional values, or name=value pairs")
    return p


def format_result(result: Any, as_yaml: bool = False) -> str:
    if as_yaml:
        import yaml

        dumped = yaml.safe_dump(result, sort_keys=False, allow_unicode=True, default_flow_style=False)
        return dumped.rstrip("\n")
    return json.dumps(result, indent=4, ensure_ascii=False)


def run_mi(args: argparse.Namespace) -> int:
    """Run the command described by the parsed arguments; print the result; the exit status."""
    from .client import (MIClientError, call_fifo, call_http, default_reply_dir, endpoint_from_config,
                         params_from_args)

    try:
        params = params_from_args(list(args.mi_args or []), args.mi_command)
        kind, where, reply_dir = "http", args.url or DEFAULT_URL, args.reply_dir
        if args.fifo:
            kind, where = "fifo", args.fifo
        elif args.config:
            kind, where, cfg_reply_dir = endpoint_from_config(args.config)
            reply_dir = reply_dir or cfg_reply_dir or None
        if kind == "fifo":
            result = call_fifo(where, args.mi_command, params, reply_dir=reply_dir or default_reply_dir(),
                               timeout=args.timeout)
        else:
            user, password = getattr(args, "user", None), getattr(args, "password", None)
            if user is not None and password is None:
                password = os.environ.get(PASSWORD_ENV)
                if password is None:
                    password = getpass.getpass(f"MI password for {user}: ")
            result = call_http(where, args.mi_command, params, timeout=args.timeout, user=user,
                               password=password)
    except MIClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return write_output(format_result(result, bool(args.yaml)) + "\n")


def write_output(text: str) -> int:
    """Print the result; 0, or 128 + SIGPIPE when the reader went away (`routescript mi ... | head`):
    then stop quietly as cat or grep do, with stdout pointed at /dev/null so that the interpreter's
    last flush does not fail again and print a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m routescript.mi.cli ...`) until routescript/cli.py wires `mi`."""
    parser = argparse.ArgumentParser(prog="routescript")
    sub = parser.add_subparsers(dest="command", required=True)
    add_mi_subcommand(sub)
    return run_mi(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
