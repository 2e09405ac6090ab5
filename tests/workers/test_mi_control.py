"""The control messages of MI aggregation and the all-or-none reload (docs/workers.md section 5) go
through the JSON-lines codec and are checked like the others."""

from __future__ import annotations

import pytest

from routescript.workers.control import (
    ControlError,
    LineDecoder,
    Prepared,
    ReloadAbort,
    ReloadCommit,
    ReloadPrepare,
    StatsReply,
    StatsRequest,
    decode,
    encode,
)


@pytest.mark.parametrize("message", [
    StatsRequest(1), StatsReply(1, [["core", "rcv_requests", 3, True, "sum"]]),
    ReloadPrepare(2, "ab" * 32), Prepared(2, True), Prepared(2, False, "w1: no"), ReloadCommit(2),
    ReloadAbort(2),
])
def test_round_trip(message: object) -> None:
    line = encode(message)  # type: ignore[arg-type]
    assert LineDecoder().feed(line) == [message]


@pytest.mark.parametrize(("line", "why"), [
    (b'{"type":"stats_reply","id":1,"rows":{}}', "field rows has the wrong type"),
    (b'{"type":"reload_prepare","gen":"2","files_sha256":"x"}', "field gen has the wrong type"),
    (b'{"type":"reload_prepare","gen":2}', "expected fields"),
    (b'{"type":"prepared","gen":2,"ok":1}', "field ok has the wrong type"),
    (b'{"type":"reload_commit","gen":true}', "field gen has the wrong type"),
])
def test_malformed_messages_are_refused_with_the_reason(line: bytes, why: str) -> None:
    with pytest.raises(ControlError, match=why):
        decode(line)
