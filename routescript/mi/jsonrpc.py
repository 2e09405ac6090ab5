"""JSON-RPC 2.0 framing for MI, as OpenSIPS 3.x's mi/mi.c does it. No I/O here.

Request checks (OpenSIPS parse_mi_request): an object with "jsonrpc": "2.0", a string "method", an
"id" that is a string, a number or null when present, and "params" that is an array or an object
when present (an empty one counts as no params). A request without "id" is a notification: it gets
no reply unless it could not be parsed or is not a valid request (-32700 / -32600).

Replies are printed compactly with the members in OpenSIPS's order:
    {"jsonrpc":"2.0","result":...,"id":1}
    {"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":1}

Batches (a JSON array of requests, JSON-RPC 2.0 section 6): OpenSIPS 3.4 answers them with
-32600 Invalid Request; we answer each member, as the JSON-RPC spec asks (a superset: no request that
works with OpenSIPS behaves differently here).

A reply whose result is a long array (subs_phtable_list over a large table: tens of MB) is encoded
in slices of rows with the event loop let run between them (`encode_reply`), to the same text that
`dumps` gives in one go.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from .walk import WALK_SLICE, let_loop_run

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000

MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    SERVER_ERROR: "Server error",
}

# Bound on the members of one batch (STYLE 7).
MAX_BATCH = 100


class JSONRPCError(Exception):
    """An MI error reply: `code`, `message` and an optional `data` detail."""

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, "Server error")
        self.data = data
        super().__init__(self.message if data is None else f"{self.message}: {data}")

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None and self.data != "":
            err["data"] = self.data
        return err


_NO_ID = object()

Dispatch = Callable[[str, "dict[str, Any] | list[Any] | None"], Awaitable[Any]]


def result_reply(result: Any, req_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": req_id}


def error_reply(err: JSONRPCError, req_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": err.to_json(), "id": req_id}


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (
        isinstance(value, (int, float)) and not isinstance(value, bool))


async def handle_request(obj: Any, dispatch: Dispatch) -> dict[str, Any] | None:
    """One request object -> its reply object, or None for a notification."""
    if not isinstance(obj, dict):
        return error_reply(JSONRPCError(INVALID_REQUEST), None)
    req_id = obj.get("id", _NO_ID)
    invalid = False
    if req_id is not _NO_ID and not _valid_id(req_id):
        invalid = True
        req_id = None
    if obj.get("jsonrpc") != "2.0":
        invalid = True
    method = obj.get("method")
    if not isinstance(method, str):
        invalid = True
    params = obj.get("params")
    if "params" in obj and not isinstance(params, (list, dict)):
        invalid = True
    reply_id = None if req_id is _NO_ID else req_id
    if invalid:
        return error_reply(JSONRPCError(INVALID_REQUEST), reply_id)
    if not params:
        params = None
    try:
        result = await dispatch(method, params)  # type: ignore[arg-type]
    except JSONRPCError as err:
        if req_id is _NO_ID:
            return None
        return error_reply(err, reply_id)
    if req_id is _NO_ID:
        return None
    return result_reply(result, reply_id)


def dumps(obj: Any, pretty: bool = False) -> str:
    """Compact JSON as OpenSIPS's cJSON prints it (pretty: 4-space indent, modparam pretty_printing)."""
    if pretty:
        return json.dumps(obj, ensure_ascii=False, indent=4, default=str)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


async def encode_reply(reply: dict[str, Any], pretty: bool = False) -> str:
    """dumps(reply, pretty), with a long result array encoded WALK_SLICE members at a time and the loop
    let run between slices (a 20 MB listing must not hold SIP for the time of one json.dumps)."""
    result = reply.get("result")
    if not isinstance(result, list) or len(result) <= WALK_SLICE or set(reply) != {"jsonrpc", "result", "id"}:
        return dumps(reply, pretty)
    req_id = dumps(reply["id"])
    if pretty:  # json.dumps(indent=4) of the whole reply, piece by piece
        head, sep, pad = '{\n    "jsonrpc": "2.0",\n    "result": [\n', ",\n", " " * 8
        tail = f'\n    ],\n    "id": {req_id}\n}}'
    else:
        head, sep, pad, tail = '{"jsonrpc":"2.0","result":[', ",", "", f'],"id":{req_id}}}'
    parts = [head]
    for start in range(0, len(result), WALK_SLICE):
        rows = result[start:start + WALK_SLICE]
        if pretty:
            # json strings never hold a raw newline, so re-indenting line by line is safe
            text = sep.join(pad + dumps(row, True).replace("\n", "\n" + pad) for row in rows)
        else:
            text = dumps(rows)[1:-1]
        parts.append(text if start == 0 else sep + text)
        await let_loop_run()
    parts.append(tail)
    return "".join(parts)


async def handle_payload(data: bytes | str, dispatch: Dispatch, *, pretty: bool = False) -> str | None:
    """A request (or batch) as received -> the reply text, or None when nothing is to be sent back."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return dumps(error_reply(JSONRPCError(PARSE_ERROR), None), pretty)
    if isinstance(obj, list):
        if not obj or len(obj) > MAX_BATCH:
            data_ = None if not obj else f"at most {MAX_BATCH} requests in a batch"
            return dumps(error_reply(JSONRPCError(INVALID_REQUEST, data=data_), None), pretty)
        replies = [r for r in [await handle_request(item, dispatch) for item in obj] if r is not None]
        return dumps(replies, pretty) if replies else None
    reply = await handle_request(obj, dispatch)
    return None if reply is None else await encode_reply(reply, pretty)
