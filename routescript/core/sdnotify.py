"""sd_notify(3) for `Type=notify` services (contrib/routescript.service): READY=1 once the SIP sockets are
bound and the script runs, RELOADING=1 ... READY=1 around a SIGHUP reload, STOPPING=1 at a stop, and
WATCHDOG=1 at half the WatchdogSec= systemd asks for (WATCHDOG_USEC).

The protocol is one datagram of `KEY=VALUE` lines to the unix socket $NOTIFY_SOCKET (a path, or an
abstract name written with a leading '@'). A dozen lines of socket code: the `sdnotify` package does the
same with no watchdog or abstract-name handling, so no dependency is taken for it. Outside systemd
($NOTIFY_SOCKET unset) every call does nothing.

Only the main process speaks (the supervisor when there are workers): systemd's default NotifyAccess=main
ignores anyone else, and the variables are removed from the environment once read, so the worker
processes and anything they start never see them (sd_notify's unset_environment).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Coroutine, MutableMapping, Sequence

log = logging.getLogger("routescript.core")

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier:
    """The service manager's notification socket; every method is a no-op when there is none."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._connected = False   # connect(): sent with send(), not sendto()

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> SystemdNotifier:
        """Read (and remove) NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. The watchdog is ours only when
        WATCHDOG_PID is unset or names this process (sd_watchdog_enabled(3))."""
        env = os.environ if environ is None else environ
        values = {name: env.pop(name, None) for name in _VARIABLES}
        address = values["NOTIFY_SOCKET"] or None
        usec: int | None = None
        text, pid = values["WATCHDOG_USEC"], values["WATCHDOG_PID"]
        if text and (not pid or pid == str(os.getpid())):
            try:
                usec = int(text)
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number: no watchdog pings", text)
            else:
                usec = usec if usec > 0 else None
        return cls(address, usec)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WatchdogSec= (sd_watchdog_enabled(3) advises it)."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def connect(self) -> None:
        """Connect the socket now, before a chroot: a path socket (/run/systemd/notify) is outside the new
        root, and a connected datagram socket keeps reaching it. A failure is said; send() then retries."""
        if self.address is None or self._sock is not None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(target)
        except OSError as exc:
            sock.close()
            log.warning("sd_notify: cannot connect to %s: %s", self.address, exc.strerror or exc)
            return
        sock.setblocking(False)
        self._sock, self._connected = sock, True

    def send(self, *fields: str) -> None:
        """One notification of `fields` ("READY=1", "STATUS=..."). Never blocks and never raises: a
        service manager that is gone or slow loses a notification (said in the log), not the server."""
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            if self._connected:
                self._sock.send("\n".join(fields).encode())
            else:
                self._sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            log.warning("sd_notify %s to %s failed: %s", fields[0], self.address, exc.strerror or exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        # MONOTONIC_USEC: what Type=notify-reload requires with RELOADING=1 (harmless for Type=notify)
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                  "STATUS=reloading the script")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock, self._connected = None, False

    async def watchdog(self) -> None:
        """WATCHDOG=1 every watchdog_interval seconds until cancelled. It runs on the event loop, so a
        loop that stops turning stops the pings: systemd then restarts the service (Restart=)."""
        interval = self.watchdog_interval
        if interval is None or self.address is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)


NO_NOTIFIER = SystemdNotifier(None)


async def reload_telling(notifier: SystemdNotifier,
                         reload: Coroutine[object, object, Sequence[object]]) -> Sequence[object]:
    """A SIGHUP reload between RELOADING=1 and READY=1 (systemd's reload protocol); a refused reload
    (the old script kept) is said in STATUS=."""
    notifier.reloading()
    diagnostics: Sequence[object] = ()
    try:
        diagnostics = await reload
    finally:
        errors = [d for d in diagnostics if getattr(d, "severity", "error") == "error"]
        notifier.ready(f"reload refused, the old script runs: {errors[0]}" if errors else "reloaded")
    return diagnostics
