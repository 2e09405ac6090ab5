"""The MI FIFO request framing, sans-IO (OpenSIPS mi_fifo's fifo_fnc.c mi_fifo_server()).

A client writes to the server's FIFO:

    ":" [reply-fifo-name] ":" json-rpc-request

(whitespace before the first ':' is skipped; a newline after the request is optional, since the JSON
text ends itself). The reply goes to <reply_dir>/<reply-fifo-name>, a FIFO the client made; an empty
name means "no reply". A name holding '.', '/' or '\\' is refused (OpenSIPS get_reply_filename), so a
client cannot make us write outside reply_dir.

Several requests may arrive in one read and one request may arrive over several reads: `feed()`
buffers and returns every complete request. Bounds: MAX_BUFFER bytes pending (OpenSIPS uses 4 KiB;
we allow bigger requests), MAX_FILENAME for the reply name.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BUFFER = 1 << 20
MAX_FILENAME = 255
_WS = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class FifoRequest:
    """A framed request: its reply FIFO name ('' = no reply) and the JSON text."""

    reply_name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class FifoError:
    """Input we drop. `reply_name` is set when we know where to tell the client; `parse_error` when the
    JSON text itself is broken (answered with JSON-RPC -32700)."""

    reason: str
    reply_name: str = ""
    parse_error: bool = False


def valid_reply_name(name: str) -> bool:
    return bool(name) and len(name) <= MAX_FILENAME and not any(c in name for c in "./\\\x00")


def json_end(data: bytes, start: int) -> int | None:
    """Index just past the JSON object/array starting at data[start] ('{' or '['), found by
    scanning brackets outside strings; None while it is incomplete."""
    depth = 0
    in_str = False
    esc = False
    for i in range(start, len(data)):
        c = data[i]
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:  # backslash
                esc = True
            elif c == 0x22:  # "
                in_str = False
            continue
        if c == 0x22:
            in_str = True
        elif c in (0x7B, 0x5B):  # { [
            depth += 1
        elif c in (0x7D, 0x5D):  # } ]
            depth -= 1
            if depth == 0:
                return i + 1
    return None


class FifoParser:
    """Bytes read from the FIFO in, framed requests (and errors) out."""

    def __init__(self, max_buffer: int = MAX_BUFFER) -> None:
        self.max_buffer = max_buffer
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[FifoRequest | FifoError]:
        self._buf += data
        out: list[FifoRequest | FifoError] = []
        while True:
            item = self._next()
            if item is None:
                break
            out.append(item)
        if len(self._buf) > self.max_buffer:
            self._buf.clear()
            out.append(FifoError(f"request longer than {self.max_buffer} bytes dropped"))
        return out

    def _drop_line(self) -> None:
        """Discard up to and including the next newline (all of it when there is none)."""
        nl = self._buf.find(b"\n")
        del self._buf[: (nl + 1 if nl >= 0 else len(self._buf))]

    def _next(self) -> FifoRequest | FifoError | None:
        buf = self._buf
        i = 0
        while i < len(buf) and buf[i] in _WS:
            i += 1
        del buf[:i]
        if not buf:
            return None
        if buf[0] != 0x3A:  # ':'
            self._drop_line()
            return FifoError("command must begin with ':'")
        sep = buf.find(b":", 1)
        if sep < 0:
            if len(buf) > MAX_FILENAME + 2:
                self._drop_line()
                return FifoError("reply FIFO name too long or ':' missing after it")
            return None
        try:
            name = bytes(buf[1:sep]).decode("ascii")
        except UnicodeDecodeError:
            name = "\x00"
        if name and not valid_reply_name(name):
            del buf[: sep + 1]
            self._drop_line()
            return FifoError(f"forbidden reply FIFO name {name!r}")
        j = sep + 1
        while j < len(buf) and buf[j] in _WS:
            j += 1
        if j >= len(buf):
            return None  # the request text has not arrived yet
        if buf[j] not in (0x7B, 0x5B):
            del buf[:j]
            self._drop_line()
            return FifoError("request is not a JSON object", name, parse_error=True)
        end = json_end(buf, j)
        if end is None:
            return None
        payload = bytes(buf[j:end])
        del buf[:end]
        return FifoRequest(name, payload)  # bad JSON inside is answered -32700 by the JSON-RPC layer
