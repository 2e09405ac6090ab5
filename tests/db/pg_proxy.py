"""A TCP proxy in front of the test PostgreSQL (or MySQL) server, so a test can cut and restore the database
like a server restart or a network cut would (used by tests/db and tests/cluster). pg_host_port(url) and
proxied(url, proxy) take a mysql:// URL too."""

from __future__ import annotations

import asyncio

from .conftest import PG_URL, parse_url


def pg_host_port(url: str | None = None) -> tuple[str, int]:
    """The server behind `url` (default: the PostgreSQL one)."""
    if url is not None and url.startswith("mysql:"):
        my = parse_url(url)
        return my.host, my.port
    target = parse_url(PG_URL)
    host_port = target.dsn.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    return host, int(port or 5432)


def proxied(url: str, proxy: TcpProxy) -> str:
    """`url` (a PG_URL with options, or a mysql:// URL) going through `proxy` instead of to the server."""
    if url.startswith("mysql:"):
        my = parse_url(url)
        return url.replace(f"{my.host}:{my.port}", f"127.0.0.1:{proxy.port}", 1)
    target = parse_url(PG_URL).dsn.split("@", 1)[1].split("/", 1)[0]
    return url.replace(target, f"127.0.0.1:{proxy.port}", 1)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server; stop() drops every connection like a server
    restart or a network cut would."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.delay = 0.0   # seconds each chunk waits before it is forwarded (a slow network), either way

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.close()

    async def drop_connections(self) -> None:
        for w in list(self.writers):
            w.close()
        self.writers.clear()
        for _ in range(5):  # let both ends see the close
            await asyncio.sleep(0)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.drop_connections()
        await self.server.wait_closed()
        for t in list(self.tasks):
            t.cancel()
