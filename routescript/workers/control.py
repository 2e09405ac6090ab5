"""The control channel between the supervisor and one worker: JSON lines over the worker's control
socketpair (docs/workers.md, section 5). Low rate (start, stop, pings, MI), so JSON, readable in strace.

Sans-IO: `encode(message) -> bytes` and `LineDecoder.feed(bytes) -> messages`; `ControlChannel` is the
thin asyncio adapter over a connected AF_UNIX stream socket. A line is one object `{"type": ..., fields}`.
Bounds: a line longer than MAX_LINE (a big MI reply is the longest) or anything that is not one of the
messages below with its fields typed is a ControlError naming the problem: the peer is one of our own
processes, so garbage is a bug to report, and the channel's user decides (the supervisor kills the worker,
a worker stops), never a crash of the reader.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from dataclasses import dataclass
from typing import Any, ClassVar

MAX_LINE = 16 * 1024 * 1024   # bytes of one line: a table walk's MI reply fits; more is an error


class ControlError(Exception):
    """A control line that is too long, not JSON, or not one of our messages."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Worker -> supervisor: started (modules started, sockets read)."""

    type: ClassVar[str] = "ready"
    slot: int
    pid: int


@dataclass(frozen=True, slots=True)
class StartFailed:
    """Worker -> supervisor: its start failed; `error` is what `routescript run` prints."""

    type: ClassVar[str] = "start_failed"
    slot: int
    error: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Supervisor -> worker: are you alive (watchdog)."""

    type: ClassVar[str] = "ping"
    seq: int


@dataclass(frozen=True, slots=True)
class Pong:
    """Worker -> supervisor: the answer to Ping `seq`."""

    type: ClassVar[str] = "pong"
    seq: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Supervisor -> worker: stop gracefully (in-flight messages, the modules' stop) and exit."""

    type: ClassVar[str] = "stop"


@dataclass(frozen=True, slots=True)
class MIRequest:
    """Supervisor -> worker: run MI command `name` with `params` (the JSON-RPC params as received)."""

    type: ClassVar[str] = "mi_request"
    id: int
    name: str
    params: Any = None


@dataclass(frozen=True, slots=True)
class MIReply:
    """Worker -> supervisor: the result of MIRequest `id`, or the JSON-RPC error (code, message, data)."""

    type: ClassVar[str] = "mi_reply"
    id: int
    ok: bool
    result: Any = None


@dataclass(frozen=True, slots=True)
class StatsRequest:
    """Supervisor -> worker: send a snapshot of your statistics (MI get_statistics merges them)."""

    type: ClassVar[str] = "stats_request"
    id: int


@dataclass(frozen=True, slots=True)
class StatsReply:
    """Worker -> supervisor: StatsRequest `id`'s snapshot, rows [group, name, value, incremental,
    aggregate] (routescript.mi.aggregate.snapshot)."""

    type: ClassVar[str] = "stats_reply"
    id: int
    rows: list[Any]


@dataclass(frozen=True, slots=True)
class ReloadPrepare:
    """Supervisor -> worker: compile the script aside; its files must hash to `files_sha256` (what the
    supervisor checked). Answered by Prepared (docs/workers.md, section 6)."""

    type: ClassVar[str] = "reload_prepare"
    gen: int
    files_sha256: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """Worker -> supervisor: ReloadPrepare `gen` compiled and kept aside (ok), or why not."""

    type: ClassVar[str] = "prepared"
    gen: int
    ok: bool
    error: str = ""


# --- presence state across workers (docs/workers.md section 5): load, adoption, the slot table -------

@dataclass(frozen=True, slots=True)
class Load:
    """Worker -> supervisor, with each Pong: how many subscriptions it holds (Adopt goes to the live
    worker holding the fewest)."""

    type: ClassVar[str] = "load"
    subscriptions: int


@dataclass(frozen=True, slots=True)
class Adopt:
    """Supervisor -> worker: slot `slot` has not been running for a while: take its state over."""

    type: ClassVar[str] = "adopt"
    slot: int


@dataclass(frozen=True, slots=True)
class Adopted:
    """Worker -> supervisor: Adopt `slot` is done (`adopted` rows taken over), or failed with `error`."""

    type: ClassVar[str] = "adopted"
    slot: int
    adopted: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class ReloadCommit:
    """Supervisor -> worker: swap in the script prepared as `gen`."""

    type: ClassVar[str] = "reload_commit"
    gen: int


@dataclass(frozen=True, slots=True)
class ReloadAbort:
    """Supervisor -> worker: drop the script prepared as `gen`; the old one keeps running."""

    type: ClassVar[str] = "reload_abort"
    gen: int


@dataclass(frozen=True, slots=True)
class SlotTableUpdate:
    """Supervisor -> worker: the slot table (routescript.workers.dispatch.SlotTable) from now on."""

    type: ClassVar[str] = "slot_table"
    version: int
    owner_of: list[int]


ControlMessage = (Ready | StartFailed | Ping | Pong | Stop | MIRequest | MIReply | StatsRequest | StatsReply
                  | ReloadPrepare | Prepared | ReloadCommit | ReloadAbort
                  | Load | Adopt | Adopted | SlotTableUpdate)
_BY_TYPE: dict[str, type[Any]] = {cls.type: cls for cls in (Ready, StartFailed, Ping, Pong, Stop, MIRequest,
                                                            MIReply)}
_BY_TYPE.update({cls.type: cls for cls in (StatsRequest, StatsReply, ReloadPrepare, Prepared, ReloadCommit,
                                           ReloadAbort)})
# The JSON type each field must have (Any: whatever JSON holds).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {"slot": (int,), "pid": (int,), "seq": (int,), "id": (int,),
                                             "error": (str,), "name": (str,), "ok": (bool,)}
_FIELD_TYPES.update({"gen": (int,), "files_sha256": (str,), "rows": (list,)})
_BY_TYPE.update({cls.type: cls for cls in (Load, Adopt, Adopted, SlotTableUpdate)})
_FIELD_TYPES.update({"subscriptions": (int,), "adopted": (int,), "version": (int,), "owner_of": (list,)})


def encode(message: ControlMessage) -> bytes:
    """One line: the message as a JSON object with its `type`, then '\\n'."""
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    line = json.dumps({"type": message.type, **fields}, separators=(",", ":")).encode()
    if len(line) >= MAX_LINE:
        raise ControlError(f"{message.type} message of {len(line)} bytes exceeds the {MAX_LINE}-byte bound")
    return line + b"\n"


def decode(line: bytes) -> ControlMessage:
    """One line (without its '\\n') -> the message; ControlError saying what is wrong."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"control line is not JSON ({exc}): {line[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ControlError(f"control line is not a JSON object: {line[:80]!r}")
    cls = _BY_TYPE.get(obj.pop("type", None))
    if cls is None:
        raise ControlError(f"unknown control message type in {line[:80]!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not required <= obj.keys() <= names:
        raise ControlError(f"{cls.type}: expected fields {sorted(names)}, got {sorted(obj)}")
    for name, value in obj.items():
        kinds = _FIELD_TYPES.get(name)
        # JSON true is a Python bool, which is an int: refused where a number is expected
        if kinds is not None and (not isinstance(value, kinds)
                                  or (isinstance(value, bool) and bool not in kinds)):
            raise ControlError(f"{cls.type}: field {name} has the wrong type ({type(value).__name__})")
    message: ControlMessage = cls(**obj)
    return message


class LineDecoder:
    """Bytes in, messages out; a partial line waits for its end; a line over MAX_LINE is an error at once
    (the buffer never holds more than one bound)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[ControlMessage]:
        self._buf += data
        out: list[ControlMessage] = []
        while (end := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if len(line) > self.max_line:
                raise ControlError(f"control line of {len(line)} bytes exceeds the {self.max_line}-byte "
                                   "bound")
            if line.strip():
                out.append(decode(line))
        if len(self._buf) > self.max_line:
            raise ControlError(f"control line of more than {self.max_line} bytes (no end of line yet)")
        return out


class ControlChannel:
    """One end of a control socketpair on the running loop: send() a message, `async for` the ones that
    arrive; the iteration ends when the peer closes (EOF) and raises ControlError on garbage."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = LineDecoder()
        self._ready: list[ControlMessage] = []

    @classmethod
    async def open(cls, sock: socket.socket) -> ControlChannel:
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE)
        return cls(reader, writer)

    def send(self, message: ControlMessage) -> None:
        """Queue one message (the transport writes it; a closed peer is seen by the reader as EOF)."""
        if not self._writer.is_closing():
            self._writer.write(encode(message))

    async def drain(self) -> None:
        await self._writer.drain()

    async def receive(self) -> ControlMessage | None:
        """The next message, or None at EOF."""
        while not self._ready:
            data = await self._reader.read(65536)
            if not data:
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.pop(0)

    def close(self) -> None:
        self._writer.close()
