"""`user` / `group` (and `routescript run -u/-g`): whom the server runs as once its SIP sockets are bound.

OpenSIPS (main.c) binds every SIP listener, then calls do_suid(uid, gid) before any worker starts; the
modules' runtime resources (database connections, the MI FIFO, the HTTP port) are opened by the
unprivileged workers. We keep that order in Server.start: bind the SIP sockets, drop privileges here,
then start the modules - so an SQLite file, the FIFO and httpd's port are opened or created by the
target user, and a file that user cannot write is the module's clear start-up error (with the user
named), never a file created by root that the server cannot use after its next restart.

With `chroot` (chroot.py) the switch comes after it, as OpenSIPS's do_suid after daemonize(): the
account and its groups are looked up before (the new root need not hold /etc/passwd or /etc/group).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("routescript.core")


class PrivilegeError(Exception):
    """A user or group that does not exist, or a switch the process is not allowed to make."""


@dataclass(frozen=True, slots=True)
class RunAs:
    """The identity to switch to: `user` None keeps the uid (OpenSIPS: group alone changes the gid)."""

    user: str | None
    uid: int | None
    gid: int | None
    # the supplementary groups (the user's own, or just the group), looked up with the account
    groups: tuple[int, ...] = ()

    def describe(self) -> str:
        parts = [f"user {self.user} (uid {self.uid})"] if self.user is not None else []
        if self.gid is not None:
            parts.append(f"gid {self.gid}")
        return ", ".join(parts)


def lookup_user(name: str) -> pwd.struct_passwd:
    """A user by name or number (OpenSIPS's user2uid accepts both). PrivilegeError when unknown."""
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"no such user \"{name}\"") from None


def lookup_group(name: str) -> int:
    """A group's gid by name or number. PrivilegeError when unknown."""
    try:
        return grp.getgrgid(int(name)).gr_gid if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise PrivilegeError(f"no such group \"{name}\"") from None


def run_as(user: str, group: str) -> RunAs | None:
    """The identity `user` / `group` name ('' = not set); None when neither is set. The gid is the
    group's, else the user's primary group. PrivilegeError for an unknown name."""
    if not user and not group:
        return None
    entry = lookup_user(user) if user else None
    gid = lookup_group(group) if group else (entry.pw_gid if entry is not None else None)
    if entry is not None:
        groups = tuple(os.getgrouplist(entry.pw_name, gid if gid is not None else entry.pw_gid))
    else:
        groups = (gid,) if gid is not None else ()
    return RunAs(entry.pw_name if entry else None, entry.pw_uid if entry else None, gid, groups)


def drop_privileges(target: RunAs, *, check_code: bool = True) -> None:
    """setgroups, setgid, then setuid (the order that still has the right to each step). The
    supplementary groups become the user's own (or just the group's), as looked up by run_as(): root's
    must not stay. PrivilegeError when the process may not switch (not root). `check_code`: whether the
    account must be able to read the Python installation (not in a chroot: everything was imported)."""
    try:
        if target.gid is not None and target.gid != os.getgid():
            os.setgroups(list(target.groups))
            os.setgid(target.gid)
        elif target.user is not None and target.uid != os.getuid():
            os.setgroups(list(target.groups))
        if target.uid is not None and target.uid != os.getuid():
            os.setuid(target.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to {target.describe()}: {exc.strerror or exc} "
                             f"(only root can; running as uid {os.getuid()})") from None
    log.info("running as uid %d, gid %d", os.getuid(), os.getgid())
    if check_code:
        _check_code_readable(target)


def _code_folders() -> list[str]:
    """Where Python finds what it imports later (lazily, at run time): the standard library,
    routescript (with its modules) and the third-party packages (lark's folder stands for them)."""
    import lark

    return [os.path.dirname(os.__file__), str(Path(__file__).resolve().parents[1]),
            os.path.dirname(os.path.dirname(lark.__file__))]


def _check_code_readable(target: RunAs) -> None:
    """Python imports modules when first used, long after start-up: a Python installation the new
    account cannot read (one under /root) would fail at the first such import, at run time. Said at
    start instead."""
    for folder in _code_folders():
        if not os.access(folder, os.R_OK | os.X_OK):
            raise PrivilegeError(f"{target.describe()} cannot read {folder}: Python imports modules from "
                                 "it at run time; install Python and routescript where that account can "
                                 "read them")
