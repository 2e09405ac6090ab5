"""`pid_file` / `routescript run -P FILE`: the main process's id, written once the SIP sockets are bound
(still as the starting user: /run is root's), removed at exit.

As OpenSIPS's daemonize(): a file naming a live process refuses the start ("running process found in
the pid file"), one naming a dead process or holding no number is replaced. With worker processes the
file holds the supervisor's id: the one process to signal (SIGTERM stops all, SIGHUP reloads all).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("routescript.core")


class PidFileError(Exception):
    """The pid file names a running process, or cannot be written."""


class PidFile:
    """One pid file: write() at start, remove() at exit (only if it still holds our id)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._written: int | None = None

    def write(self) -> None:
        """Write our id; PidFileError when another live process holds the file, or it cannot be written."""
        other = self._recorded()
        if other is not None and other != os.getpid() and _alive(other):
            raise PidFileError(f"pid file {self.path}: process {other} is running (another routescript?); "
                               "stop it or remove the file")
        pid = os.getpid()
        tmp = self.path.with_name(f".{self.path.name}.{pid}")
        try:
            tmp.write_text(f"{pid}\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)   # a reader never sees an empty file
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PidFileError(f"cannot write pid file {self.path}: {exc.strerror or exc}") from None
        self._written = pid

    def remove(self) -> None:
        """Remove the file if it still holds our id. After the privilege drop the folder may be root's:
        then the stale file stays (the next start replaces it) and that is said."""
        if self._written is None or self._recorded() != self._written:
            return
        try:
            self.path.unlink()
        except OSError as exc:
            log.info("pid file %s left behind: %s", self.path, exc.strerror or exc)
        self._written = None

    def _recorded(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        if not text.isdigit():
            log.warning("pid file %s holds no process id: replacing it", self.path)
            return None
        return int(text)


def _alive(pid: int) -> bool:
    """OpenSIPS's test: kill(pid, 0) succeeds, or fails with EPERM (alive, someone else's)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True
