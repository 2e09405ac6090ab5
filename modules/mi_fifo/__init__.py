"""mi_fifo - MI over a named pipe (OpenSIPS mi_fifo module).

    loadmodule "mi_fifo.so"
    modparam("mi_fifo", "fifo_name", "/tmp/opensips_fifo")   # the default, as OpenSIPS
    modparam("mi_fifo", "fifo_mode", 0660)                  # the default (rw-rw----)

A client writes `:<reply_fifo>:<json-rpc request>` to fifo_name and reads the reply from
<reply_dir>/<reply_fifo>, a FIFO it created (reply_dir defaults to /tmp/). opensips-cli, the
`opensips` Python package and `routescript mi --fifo PATH` all speak this. The FIFO is created at
start (a file already at that path is removed first, as OpenSIPS does) and removed at stop.

fifo_user / fifo_group: owner of the FIFO (a name or a number). enable_kill (ours, default 0):
whether the `kill` MI command may stop the server over this FIFO.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
from typing import TYPE_CHECKING, Any

from routescript.core.chroot import outside
from routescript.core.module import ConfigError, Module, Param

if TYPE_CHECKING:
    from routescript.core.host import ModuleHost

log = logging.getLogger("routescript.mi_fifo")

_TRACE_LATER = "MI tracing needs proto_hep, which routescript does not have"


def _user_id(value: str | None) -> tuple[int, int]:
    """(uid, its primary gid) for a user name or number; (-1, -1) when unset."""
    if value in (None, ""):
        return -1, -1
    assert value is not None
    if value.isdigit():
        return int(value), -1
    try:
        pw = pwd.getpwnam(value)
    except KeyError:
        raise ConfigError(f"modparam(\"mi_fifo\", \"fifo_user\"): bad user name \"{value}\"") from None
    return pw.pw_uid, pw.pw_gid


def _group_id(value: str | None) -> int:
    if value in (None, ""):
        return -1
    assert value is not None
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ConfigError(f"modparam(\"mi_fifo\", \"fifo_group\"): bad group name \"{value}\"") from None


class MiFifoModule(Module):
    name = "mi_fifo"
    runs_in = "supervisor"   # one FIFO per server: the supervisor answers or forwards (docs/workers.md)
    params = (
        Param("fifo_name", str, "/tmp/opensips_fifo", "path of the MI FIFO"),
        Param("fifo_mode", int, 0o660, "permissions of the FIFO"),
        Param("fifo_user", str, None, "owner of the FIFO (name or uid)"),
        Param("fifo_group", str, None, "group of the FIFO (name or gid)"),
        Param("reply_dir", str, "/tmp/", "directory the reply FIFOs must be in"),
        Param("pretty_printing", int, 0, "indent the JSON replies"),
        Param("enable_kill", int, 0, "allow the `kill` MI command over the FIFO"),
        Param("trace_destination", str, None, later=_TRACE_LATER),
        Param("trace_bwlist", str, None, later=_TRACE_LATER),
    )

    def __init__(self, server: ModuleHost, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.fifo: Any = None
        self.registry: Any = None

    def check(self) -> None:
        if not self.param("fifo_name"):
            raise ConfigError("modparam(\"mi_fifo\", \"fifo_name\"): no fifo configured")
        # start() creates the FIFO; a directory that is not there fails it: said at load (check = run).
        # With `chroot` both paths are inside the new root (start() runs after the chroot).
        jail = str(self.server.config.get("chroot") or "")
        inside = f" inside the chroot {jail}" if jail else ""
        fifo_dir = os.path.dirname(os.path.abspath(self.param("fifo_name")))
        if not os.path.isdir(outside(jail, fifo_dir)):
            raise ConfigError(f"cannot create FIFO {self.param('fifo_name')}: "
                              f"{os.strerror(errno.ENOENT)} (no directory {fifo_dir}{inside})")
        reply_dir = self.param("reply_dir")
        if not reply_dir or not os.path.isdir(outside(jail, reply_dir)):
            raise ConfigError(f"modparam(\"mi_fifo\", \"reply_dir\"): \"{reply_dir}\" is not a directory"
                              + inside)
        uid, gid = _user_id(self.param("fifo_user"))
        group = _group_id(self.param("fifo_group"))
        self._uid, self._gid = uid, (group if group != -1 else gid)
        mode = self.param("fifo_mode")
        if not mode:
            log.warning("fifo_mode = 0 cannot be used, forcing it to rw------- (0600)")
            mode = 0o600
        if mode < 0 or mode > 0o7777:
            raise ConfigError(f"modparam(\"mi_fifo\", \"fifo_mode\"): bad mode {mode:o}")
        self._mode = mode

    async def start(self) -> None:
        from routescript.mi import mi_registry

        from ._server import FifoServer

        self.registry = mi_registry(self.server)
        allow_kill = bool(self.param("enable_kill"))
        pretty = bool(self.param("pretty_printing"))

        async def handle(payload: bytes) -> str | None:
            from routescript.mi.jsonrpc import handle_payload

            async def dispatch(name: str, params: Any) -> Any:
                return await self.registry.dispatch(name, params, allow_kill=allow_kill)

            return await handle_payload(payload, dispatch, pretty=pretty)

        self.fifo = FifoServer(self.param("fifo_name"), handle, mode=self._mode, uid=self._uid, gid=self._gid,
                               reply_dir=self.param("reply_dir"))
        try:
            await self.fifo.start()
        except OSError as exc:
            self.fifo = None
            raise ConfigError(f"mi_fifo: cannot create FIFO {self.param('fifo_name')}: "
                              f"{exc.strerror or exc}") from None

    async def stop(self) -> None:
        if self.fifo is not None:
            fifo, self.fifo = self.fifo, None
            await fifo.stop()


MODULE = MiFifoModule
