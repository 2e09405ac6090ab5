"""/etc/hosts (hosts(5)): a name listed there resolves without DNS, as libc's resolver does for OpenSIPS.

Read at the first lookup and again when the file's modification time changes, checked at most once
every RECHECK seconds (one stat, never on every message). Time is injected: `now` comes from the caller.
"""

from __future__ import annotations

import logging
import os

from routescript.sip.hosts import is_ip, normalize_host

__all__ = ["HostsFile", "parse_hosts"]

log = logging.getLogger("routescript.resolve")

RECHECK = 5.0
MAX_BYTES = 1 << 20   # a hosts file larger than 1 MiB is read up to there (bounded start-up work)


def parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """name (lower-case) -> addresses in file order. hosts(5): `address name [aliases...]`, `#` starts a
    comment; a line whose address is not an IP address is skipped."""
    table: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or not is_ip(fields[0]):
            continue
        address = normalize_host(fields[0])
        for written in fields[1:]:
            name = written.lower().rstrip(".")
            if address not in table.get(name, ()):
                table[name] = table.get(name, ()) + (address,)
    return table


class HostsFile:
    """The addresses a hosts file gives a name; a missing file lists nothing."""

    __slots__ = ("path", "_table", "_mtime", "_checked_at", "_said_missing")

    def __init__(self, path: str = "/etc/hosts") -> None:
        self.path = path
        self._table: dict[str, tuple[str, ...]] = {}
        self._mtime: float | None = None
        self._checked_at: float | None = None
        self._said_missing = False

    def lookup(self, name: str, now: float) -> tuple[str, ...] | None:
        if self._checked_at is None or now - self._checked_at >= RECHECK:
            self._checked_at = now
            self._reload_if_changed()
        return self._table.get(name)

    def _reload_if_changed(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as exc:
            if self._mtime is not None or not self._said_missing:
                # said at the first lookup and when the file goes away, not at every recheck
                log.info("hosts file %s not read (%s): names resolve through DNS only", self.path,
                         exc.strerror or exc)
                self._said_missing = True
            self._table, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                text = f.read(MAX_BYTES)
        except OSError as exc:
            log.warning("hosts file %s not read: %s", self.path, exc)
            return
        self._table, self._mtime = parse_hosts(text), mtime
