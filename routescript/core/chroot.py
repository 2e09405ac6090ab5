"""`chroot` (and `routescript run --chroot DIR`, OpenSIPS's -t): the server's root directory once its
SIP sockets are bound.

OpenSIPS's order (main.c, daemonize.c): the script is parsed, the listeners are made, daemonize()
chroots and changes to working_dir (inside the new root), writes the pid file (inside), then the
modules open their resources and do_suid() switches user. Everything opened after the chroot is inside
it. We keep that order (confinement.py, Confinement.confine): bind the SIP sockets, import now what the
server could import later, chroot, chdir to `wdir` (inside) or /, write the pid file (inside), switch
user/group, start the modules (their databases, the MI FIFO: inside). The supervisor does it before it
forks: the workers, and a worker restarted later, are forked inside the new root.

A Python process imports lazily: a module is read from disk the first time something asks for it,
long after start-up. Inside the new root the Python installation is not there (and must not be: the
jail's point is to hold nothing but the server's data), so every import the server can make later is
made before the chroot (preload_imports: routescript, every loaded module's package, the libraries
routescript depends on and any other third-party package imported by then, and the standard library's
lazily imported parts). A forgotten one is not a
mysterious failure at run time: LateImportGuard, first in sys.meta_path after the chroot, logs one
error naming the module (and why it cannot be found), then the import fails as it would have anyway.

Paths read before the chroot (at load: the script, its include_file files, tls_mgm's certificates and
keys; Module.before_chroot: tls_mgm's server contexts for the workers) are read where they are; paths
opened after it (db_url's SQLite file, mi_fifo's FIFO and reply_dir, pid_file, wdir, /etc/resolv.conf
and /etc/hosts, the script again on a reload) are inside the new root (docs/operations.md, "chroot").
"""

from __future__ import annotations

import errno
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import pkgutil
import re
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

log = logging.getLogger("routescript.core")

NEEDS = "chroot needs root or CAP_SYS_CHROOT"

# The standard library's packages the server uses, imported whole: their submodules are imported
# lazily by the package itself (asyncio's event loop parts, the encodings a codec lookup finds, json's
# decoder, logging.handlers for syslog, email.utils for dates, xml for PIDF, sqlite3's dbapi2).
STDLIB_PACKAGES = ("asyncio", "collections", "concurrent", "email", "encodings", "html", "http",
                   "importlib", "json", "logging", "sqlite3", "urllib", "xml", "zoneinfo")
# Single standard-library modules imported lazily somewhere on a path the server can take: by our code
# in a function body, or by the standard library itself (socket's idna codec: stringprep and
# unicodedata; time.strptime: _strptime; hashlib's and random's helpers; argparse's gettext).
STDLIB_MODULES = (
    "argparse", "array", "base64", "binascii", "bisect", "calendar", "codecs", "contextlib", "contextvars",
    "copy", "copyreg", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "errno", "fcntl",
    "fnmatch", "fractions", "functools", "gettext", "glob", "grp", "gzip", "hashlib", "heapq", "hmac",
    "inspect", "ipaddress", "itertools", "linecache", "locale", "math", "mmap", "numbers", "operator",
    "pickle", "platform", "pprint", "pwd", "queue", "quopri", "random", "re", "resource", "secrets",
    "selectors", "shlex", "shutil", "signal", "socket", "ssl", "stat", "statistics", "string", "stringprep",
    "struct", "tempfile", "textwrap", "threading", "tokenize", "traceback", "typing", "unicodedata",
    "uuid", "warnings", "weakref", "zlib", "_strptime",
)
# Never imported whole: imported by a .pth file at interpreter start-up or by a test runner, with
# import-time effects (an override of distutils, a plugin registry) the server has no use for.
# routescript.modules: only the loaded modules are imported; routescript.testing and time_machine: the
# test runner's (`routescript test`, the pytest plugin; time_machine imports pytest), never a server's.
NOT_WALKED = frozenset({"_distutils_hack", "setuptools", "pkg_resources", "pip", "_pytest", "pytest",
                        "pluggy", "py", "IPython", "routescript.modules", "routescript.testing",
                        "time_machine"})
# A library's parts for its users' tests (aiohttp's pytest plugin imports pytest): never a server's.
TEST_PARTS = frozenset({"tests", "test", "testing", "pytest_plugin", "test_utils", "conftest"})


class ChrootError(Exception):
    """The chroot cannot be made: no such directory, not a directory, or not allowed."""


def check_chroot_dir(path: str) -> str:
    """`path` made absolute when it names an existing directory; ChrootError saying why not (at load:
    `routescript check` reports it with the line)."""
    if not path:
        raise ChrootError("chroot needs a directory")
    full = os.path.abspath(path)
    if not os.path.exists(full):
        raise ChrootError(f"chroot directory \"{path}\" does not exist")
    if not os.path.isdir(full):
        raise ChrootError(f"chroot directory \"{path}\" is not a directory")
    return full


def outside(jail: str, path: str) -> str:
    """Where a path the server opens after the chroot is, seen from outside (before it): a check at
    load looks there (mi_fifo's FIFO folder, wdir). Relative paths are relative to wdir or the new root,
    both inside: taken as below the new root."""
    return os.path.join(jail, path.lstrip("/")) if jail else path


def inside(jail: str, path: str) -> str:
    """How the server finds, after the chroot, a file it read before it at `path` (the script, on a
    reload): a path under the new root loses that prefix (/srv/jail/etc/rs.cfg is /etc/rs.cfg inside);
    any other absolute path is looked up at the same path inside, as OpenSIPS's reload does."""
    full = os.path.abspath(path)
    root = os.path.abspath(jail)
    if full == root:
        return "/"
    if full.startswith(root.rstrip("/") + "/"):
        return "/" + os.path.relpath(full, root)
    return full


@dataclass(slots=True)
class Preloaded:
    """What preload_imports did: how many modules are in sys.modules now, which names could not be
    imported before the chroot (they cannot be after it either: importing them fails quietly, as it did),
    and how long it took."""

    modules: int = 0
    absent: set[str] = field(default_factory=set)
    seconds: float = 0.0


def preload_imports(packages: Iterable[str], *, stdlib_packages: Sequence[str] = STDLIB_PACKAGES,
                    stdlib_modules: Sequence[str] = STDLIB_MODULES) -> Preloaded:
    """Import now, whole, everything the server may import later: `packages` (routescript, every loaded
    module's package), the standard library's lazily used parts, the libraries routescript depends on,
    then every other third-party package imported by then (a library's own lazy imports: dnspython's
    record types, aiohttp's web server parts)."""
    started = time.monotonic()
    done = Preloaded()
    with warnings.catch_warnings():   # a library's deprecated corner imported here is not the operator's news
        warnings.simplefilter("ignore")
        for name in (*packages, *stdlib_packages):
            _import_whole(name, done.absent)
        for name in stdlib_modules:
            _import_one(name, done.absent)
        # the libraries routescript depends on, whether imported yet or not (httpd imports aiohttp in
        # its start()), then any other third-party package imported by now (a module's own dependency)
        for name in sorted(declared_dependencies() - NOT_WALKED):
            _import_whole(name, done.absent)
        for name in sorted(_third_party(sys.modules, _stdlib_dirs())):
            _import_whole(name, done.absent)
    done.modules = len(sys.modules)
    done.seconds = time.monotonic() - started
    return done


def _import_one(name: str, absent: set[str]) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:   # noqa: BLE001 - an optional part (a Windows module, a missing extra)
        absent.add(name)
        log.debug("not imported before the chroot: %s (%s: %s)", name, type(exc).__name__, exc)
        return None


def _import_whole(name: str, absent: set[str]) -> None:
    """`name` and, when it is a package, every module below it (never a __main__: importing one runs it,
    nor a library's tests folder, nor NOT_WALKED)."""
    module = _import_one(name, absent)
    path = getattr(module, "__path__", None)
    if module is None or path is None:
        return
    for info in pkgutil.iter_modules(path, name + "."):
        leaf = info.name.rpartition(".")[2]
        if leaf == "__main__" or info.name in NOT_WALKED or \
                (leaf in TEST_PARTS and not name.startswith("routescript")):
            continue
        if info.ispkg:
            _import_whole(info.name, absent)
        else:
            _import_one(info.name, absent)


# The extras whose libraries a running server imports (a db_url's driver); the others are the tests'
# and the linters'.
RUNTIME_EXTRAS = ("postgres", "mysql")


def declared_dependencies(distribution: str = "routescript") -> set[str]:
    """The top-level import names of the libraries `distribution` requires (and its RUNTIME_EXTRAS')
    that are installed."""
    from importlib import metadata

    try:
        requirements = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return set()
    wanted = set()
    for requirement in requirements:
        name, _, marker = requirement.partition(";")
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)", marker)
        if extra is not None and extra.group(1) not in RUNTIME_EXTRAS:
            continue
        wanted.add(_canonical(re.split(r"[\s<>=!~\[(]", name.strip(), maxsplit=1)[0]))
    wanted.discard(_canonical(distribution))
    return {top for top, dists in metadata.packages_distributions().items()
            if not top.startswith("_") and any(_canonical(d) in wanted for d in dists)}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _stdlib_dirs() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib"))


def _third_party(modules: dict[str, ModuleType], stdlib: tuple[str, ...]) -> set[str]:
    """The top-level packages in `modules` that come from outside the standard library (site-packages),
    routescript's own and NOT_WALKED left out."""
    names = set()
    for name, module in list(modules.items()):
        if "." in name or name in NOT_WALKED or name == "routescript" or name.startswith("_"):
            continue
        path = getattr(module, "__path__", None)
        if not path:
            continue
        where = os.path.realpath(next(iter(path)))
        if "site-packages" in where or "dist-packages" in where or not where.startswith(stdlib):
            names.add(name)
    return names


class LateImportGuard(importlib.abc.MetaPathFinder):
    """First in sys.meta_path after the chroot: any import that reaches the finders (the module is not in
    sys.modules) is one preload_imports missed. It is logged once, as an error naming the module, and
    fails (ModuleNotFoundError): the Python installation is not inside the new root. Names known absent
    before the chroot fail quietly, as they did then (an optional library's `try: import`); modules
    compiled into the interpreter (builtin, frozen) need no file and pass."""

    def __init__(self, jail: str, absent: Iterable[str] = ()) -> None:
        self.jail = jail
        self.absent = frozenset(absent)
        self.reported: set[str] = set()

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in sys.builtin_module_names or importlib.machinery.FrozenImporter.find_spec(fullname):
            return None   # compiled into the interpreter: no file to read, the next finders serve it
        if fullname in self.absent:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        if fullname not in self.reported:
            self.reported.add(fullname)
            log.error("module %s imported after the chroot to %s: the Python installation is not inside "
                      "it, so the import fails (routescript imports what it uses before the chroot - this "
                      "one was missed: please report it; routescript/core/chroot.py lists them)",
                      fullname, self.jail)
        raise ModuleNotFoundError(f"No module named {fullname!r} (imported after the chroot to {self.jail})",
                                  name=fullname)

    def install(self) -> None:
        sys.meta_path.insert(0, self)


def enter_chroot(jail: str) -> None:
    """chroot(jail), then chdir("/") inside it (a working directory left outside would be a way out).
    ChrootError naming the directory and why; EPERM says who may."""
    try:
        os.chroot(jail)
    except OSError as exc:
        who = f" ({NEEDS}; running as uid {os.geteuid()})" if exc.errno == errno.EPERM else ""
        raise ChrootError(f"cannot chroot to {jail}: {exc.strerror or exc}{who}") from None
    os.chdir("/")


def package_of(module_name: str) -> str:
    """The package a module class lives in ("routescript.modules.presence.module" ->
    "routescript.modules.presence"): what preload_imports imports whole for a loaded module."""
    parts = module_name.split(".")
    if parts[:2] == ["routescript", "modules"] and len(parts) > 2:
        return ".".join(parts[:3])
    return parts[0]
