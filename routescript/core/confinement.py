"""What the server's process gives up once its SIP sockets are bound, in OpenSIPS's order: the chroot
(chroot.py), the pid file written as the starting user (pidfile.py), then the process limits, wdir and
user/group (privileges.py). Each refusal is a LoadError at the parameter's position."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .chroot import ChrootError, LateImportGuard, enter_chroot, inside, package_of, preload_imports
from .config import CoreConfig
from .loading import ConfigLoader, Diagnostic, LoadError, config_diagnostic
from .module import ConfigError
from .pidfile import PidFile, PidFileError
from .privileges import PrivilegeError, RunAs, drop_privileges
from .resource_limits import set_resource_limits

if TYPE_CHECKING:
    from routescript.sip import SocketInfo

    from .lifecycle import StartingServer
    from .sdnotify import SystemdNotifier

log = logging.getLogger("routescript.core")


class Confinement:
    """The chroot, the pid file and the privilege drop of one server's process."""

    def __init__(self, server: StartingServer, loader: ConfigLoader) -> None:
        self._server = server
        self._loader = loader
        self._identity: tuple[RunAs | None] | None = None   # user/group, resolved once (identity())
        self.chrooted = False                             # confine() entered the `chroot` directory

    def identity(self) -> RunAs | None:
        """Whom the server runs as (user/group), looked up once: before the chroot, whose new root
        need not hold /etc/passwd and /etc/group. PrivilegeError for an unknown name."""
        if self._identity is None:
            self._identity = (self._server.config.run_as(),)
        return self._identity[0]

    def confine(self, notifier: SystemdNotifier, sockets: Sequence[SocketInfo] | None = None) -> None:
        """`chroot` (chroot.py says why here): the identity to switch to is looked up, the modules read
        what they would read later (Module.before_chroot, for `sockets`: the workers' when they adopt
        them, else this process's), everything the server may import later is imported, systemd's
        socket (`notifier`) connected, then the chroot (and chdir /), and LateImportGuard reports any
        import still made. From here the script file a reload reads is the one inside the new root. A
        LoadError when the chroot cannot be made (not root: EPERM)."""
        config = self._server.config
        try:
            self.identity()
        except PrivilegeError as exc:
            raise LoadError([Diagnostic(str(exc), _identity_pos(config))]) from None
        jail = str(config.get("chroot") or "")
        if not jail:
            return
        modules = self._server.modules.instances.values()
        for module in modules:   # what they would read later (tls_mgm: the certificates)
            module.before_chroot(self._server.sockets if sockets is None else sockets)
        packages = {package_of(type(mod).__module__) for mod in modules}
        preloaded = preload_imports(["routescript", *sorted(packages)])
        notifier.connect()   # its socket's path is outside the new root
        script = inside(jail, self._loader.path)
        try:
            enter_chroot(jail)
        except ChrootError as exc:
            raise LoadError([Diagnostic(str(exc), config.positions.get("chroot"))]) from None
        LateImportGuard(jail, preloaded.absent).install()
        self.chrooted = True
        self._loader.path = script
        log.info("chroot %s: %d modules imported before it (%.2f s); the paths opened from now on are "
                 "inside it", jail, preloaded.modules, preloaded.seconds)
        if not os.path.isfile(script):
            log.warning("reload_routes (SIGHUP) reads the script at %s inside the chroot %s: no such file "
                        "there, so a reload is refused until it is (docs/operations.md, chroot)",
                        script, jail)

    def write_pid_file(self) -> PidFile | None:
        """pid_file (-P): this process's id, written before the privilege drop (/run is root's); None
        when not asked for. A LoadError when another live process holds it or it cannot be written."""
        path = str(self._server.config.get("pid_file") or "")
        if not path:
            return None
        pid_file = PidFile(path)
        try:
            pid_file.write()
        except PidFileError as exc:
            raise LoadError([Diagnostic(str(exc), self._server.config.positions.get("pid_file"))]) from None
        return pid_file

    def drop_privileges(self) -> RunAs | None:
        """The process limits (open_files_limit, disable_core_dump: raising a hard limit needs root),
        wdir, then user/group: switch once the SIP sockets are bound (ports below 1024 need root),
        before the modules open their files (privileges.py says why)."""
        config = self._server.config
        try:
            for line in set_resource_limits(config):
                log.info("%s", line)
        except ConfigError as exc:
            raise LoadError([config_diagnostic(exc)]) from None
        if wdir := config.get("wdir"):
            os.chdir(wdir)   # OpenSIPS: chdir(working_dir) (inside the chroot), then do_suid
        try:
            target = self.identity()
            if target is not None:
                # in a chroot the Python installation is not there to read: every import was made before
                drop_privileges(target, check_code=not self.chrooted)
        except PrivilegeError as exc:
            raise LoadError([Diagnostic(str(exc), _identity_pos(config))]) from None
        return target


def _identity_pos(config: CoreConfig) -> Any:
    return next((config.positions[n] for n in ("user", "uid", "group", "gid") if n in config.positions), None)
