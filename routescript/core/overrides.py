"""`routescript run` flags that override the script's core parameters (docs/operations.md has the table
beside OpenSIPS's own flags):

    -u/--user USER       user      (OpenSIPS -u)
    -g/--group GROUP     group     (OpenSIPS -g)
    -P/--pid-file FILE   pid_file  (OpenSIPS -P)
    --log-level LEVEL    log_level (OpenSIPS -d, counted; here the level itself, a number or L_INFO...)
    --listen SOCKET      adds a socket, as a `socket =` line does (OpenSIPS -l)
    -t/--chroot DIR      chroot    (OpenSIPS -t) } given to the load itself (load_for_run), so that
    -w/--wdir DIR        wdir      (OpenSIPS -w) } the checks of wdir and the modules' paths see them

Each value is checked as the parameter's own would be; a bad one is a LoadError naming the flag, before
anything is opened. Choice: the command line wins over the script (OpenSIPS reads its flags first and
lets the script override some; an operator's command line is the later, more specific word).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import parse_log_level, parse_socket
from .loading import LoadError, PlainDiagnostic
from .module import ConfigError
from .privileges import PrivilegeError, run_as

if TYPE_CHECKING:
    from .config import CoreConfig


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The overrides given on `routescript run`'s command line (None / empty: the script's own)."""

    user: str | None = None
    group: str | None = None
    pid_file: str | None = None
    log_level: str | None = None
    listen: Sequence[str] = field(default_factory=tuple)
    chroot: str | None = None
    wdir: str | None = None


def apply_overrides(config: CoreConfig, options: RunOptions) -> None:
    """Write the command line's values into `config`; LoadError naming the flag for a bad value.
    (`chroot` and `wdir` are not here: core_values() gives them to the load.)"""
    for flag, name, value in (("-u", "user", options.user), ("-g", "group", options.group)):
        if value is None:
            continue
        try:
            run_as(value, "") if name == "user" else run_as("", value)
        except PrivilegeError as exc:
            _refuse(flag, value, str(exc))
        _set(config, name, value, drop="uid" if name == "user" else "gid")
    if options.pid_file is not None:
        if not options.pid_file:
            _refuse("-P", options.pid_file, "the pid file needs a path")
        _set(config, "pid_file", options.pid_file)
    if options.log_level is not None:
        try:
            level = parse_log_level(options.log_level)
        except ValueError as exc:
            _refuse("--log-level", options.log_level, str(exc))
        _set(config, "log_level", level, drop="debug")
    for text in options.listen:
        try:
            config.sockets.append(parse_socket(text))
        except ConfigError as exc:
            _refuse("--listen", text, exc.message)


def core_values(options: RunOptions) -> dict[str, object]:
    """The command line's core parameters the load itself must see (ConfigLoader.load's core_values)."""
    values = {"chroot": options.chroot, "wdir": options.wdir}
    return {name: value for name, value in values.items() if value is not None}


def _set(config: CoreConfig, name: str, value: object, drop: str | None = None) -> None:
    """The value as if the script had it, without the script's position (the error is the flag's)."""
    config.values[name] = value
    config.positions.pop(name, None)
    if drop is not None:
        config.values.pop(drop, None)
        config.positions.pop(drop, None)


def _refuse(flag: str, value: str, why: str) -> None:
    raise LoadError([PlainDiagnostic(f"{flag} {value}: {why}")])
