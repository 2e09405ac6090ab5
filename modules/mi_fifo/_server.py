"""The FIFO listener on the event loop: non-blocking reads of the server FIFO, one worker running the
requests in arrival order (OpenSIPS's MI FIFO process is serial too), replies written to the client's
reply FIFO without ever blocking the loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from collections.abc import Awaitable, Callable

from routescript.mi.jsonrpc import PARSE_ERROR, JSONRPCError, dumps, error_reply

from ._protocol import FifoError, FifoParser, FifoRequest

log = logging.getLogger("routescript.mi_fifo")

Handler = Callable[[bytes], Awaitable[str | None]]

MAX_PENDING = 64          # requests read but not run yet (STYLE 7); more are dropped and logged
READ_SIZE = 65536
REPLY_RETRIES = 20        # opening the reply FIFO while the client has not opened it yet (ENXIO)
REPLY_WAIT = 0.05         # seconds between those attempts (OpenSIPS: 4 x 80 ms; clients can be slow)
WRITE_TIMEOUT = 5.0       # a client that stops reading its reply is given up


class FifoServer:
    """Serve MI requests written to the FIFO at `path`; replies go to FIFOs under `reply_dir`."""

    def __init__(self, path: str, handler: Handler, *, mode: int = 0o660, uid: int = -1, gid: int = -1,
                 reply_dir: str = "/tmp/", reply_retries: int = REPLY_RETRIES,
                 reply_wait: float = REPLY_WAIT, write_timeout: float = WRITE_TIMEOUT) -> None:
        self.path = path
        self.handler = handler
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.reply_dir = reply_dir
        self.reply_retries = reply_retries
        self.reply_wait = reply_wait
        self.write_timeout = write_timeout
        self._parser = FifoParser()
        self._rfd = -1
        self._wfd = -1
        self._queue: asyncio.Queue[FifoRequest | FifoError] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._ino: tuple[int, int] | None = None

    async def start(self) -> None:
        """Create the FIFO (an old file at that path is removed first, as OpenSIPS does) and listen."""
        loop = asyncio.get_running_loop()
        if os.path.lexists(self.path):  # noqa: ASYNC240 - one stat at start-up, before serving
            os.unlink(self.path)
        os.mkfifo(self.path, self.mode)
        os.chmod(self.path, self.mode)  # mkfifo's mode is filtered by the umask
        if self.uid != -1 or self.gid != -1:
            os.chown(self.path, self.uid, self.gid)
        self._rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # Our own writer keeps the FIFO open, so reads never see end-of-file between clients.
        self._wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        st = os.fstat(self._rfd)
        self._ino = (st.st_dev, st.st_ino)
        self._queue = asyncio.Queue(MAX_PENDING)
        self._worker = loop.create_task(self._work())
        loop.add_reader(self._rfd, self._on_readable)
        log.info("MI FIFO listening on %s (mode %o)", self.path, self.mode)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._rfd >= 0:
            loop.remove_reader(self._rfd)
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        # Remove the FIFO, unless someone replaced it meanwhile (then it is not ours).
        try:
            st = os.lstat(self.path)
            if self._ino == (st.st_dev, st.st_ino):
                os.unlink(self.path)
        except OSError:
            pass

    # ---------------------------------------------------------------- reading
    def _on_readable(self) -> None:
        try:
            data = os.read(self._rfd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            log.error("reading %s: %s", self.path, exc)
            return
        if not data:
            return
        assert self._queue is not None
        for item in self._parser.feed(data):
            if isinstance(item, FifoError):
                log.warning("MI FIFO: %s", item.reason)
                if not (item.reply_name and item.parse_error):
                    continue
            try:
                self._queue.put_nowait(item)
            except asyncio.QueueFull:
                log.error("MI FIFO: %d requests pending; request dropped", MAX_PENDING)

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, FifoError):
                    reply: str | None = dumps(error_reply(JSONRPCError(PARSE_ERROR), None))
                else:
                    reply = await self.handler(item.payload)
                if item.reply_name and reply is not None:
                    await self.write_reply(item.reply_name, reply + "\n")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("MI FIFO request failed")

    # ---------------------------------------------------------------- replying
    async def write_reply(self, name: str, text: str) -> bool:
        """Write `text` to <reply_dir>/<name>. False (logged) when the client is not there."""
        path = os.path.join(self.reply_dir, name)
        fd = -1
        for _ in range(max(1, self.reply_retries)):
            try:
                # Non-blocking: a client that never opens its reply FIFO must not hold us.
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    log.warning("MI FIFO: cannot open reply FIFO %s: %s", path, exc.strerror or exc)
                    return False
                await asyncio.sleep(self.reply_wait)
        if fd < 0:
            log.warning("MI FIFO: no client reading %s", path)
            return False
        try:
            if not _safe_fifo(fd, path):
                return False
            await self._write_all(fd, text.encode("utf-8"))
            return True
        except (BrokenPipeError, TimeoutError) as exc:
            log.warning("MI FIFO: reply to %s not delivered: %s", path, exc)
            return False
        finally:
            os.close(fd)

    async def _write_all(self, fd: int, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        deadline = loop.time() + self.write_timeout
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("client stopped reading")
            ready = loop.create_future()
            loop.add_writer(fd, _wake, ready)
            try:
                await asyncio.wait_for(ready, remaining)
            finally:
                loop.remove_writer(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    """The reader can take more: wake the writer waiting on `ready`."""
    if not ready.done():
        ready.set_result(None)


def _safe_fifo(fd: int, path: str) -> bool:
    """OpenSIPS mi_fifo_check: a real FIFO, not hard-linked, not reached through a symlink."""
    fst = os.fstat(fd)
    if not stat.S_ISFIFO(fst.st_mode):
        log.error("MI FIFO: %s is not a fifo", path)
        return False
    if fst.st_nlink > 1:
        log.error("MI FIFO: security: %s is hard-linked %d times", path, fst.st_nlink)
        return False
    lst = os.lstat(path)
    if stat.S_ISLNK(lst.st_mode) or (lst.st_dev, lst.st_ino) != (fst.st_dev, fst.st_ino):
        log.error("MI FIFO: security: %s is a soft link or was replaced", path)
        return False
    return True
