"""presence_example: a tiny event package, "x-example", built on the presence module API - the worked
example of docs/event-packages.md.

A device PUBLISHes one short status line (text/plain) for its user; every watcher gets all the lines its
presentity's devices published, one per line (agg_nbody), headed by a counter of the NOTIFYs that watcher
got (aux_body_processing). A body of more than one line, or not UTF-8, is refused with 400.

    loadmodule "presence.so"
    loadmodule "presence_example.so"          # found through the `routescript.modules` entry point
    modparam("presence_example", "default_expires", 600)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from routescript.core.module import ConfigError, Module, Param
from routescript.modules.presence import BodyError, PresenceEvent, bind_presence

EVENT_NAME = "x-example"
MAX_LINE = 200  # bound: a status line


def check_status_line(body: bytes) -> None:
    """evs_publ_handl: one line of UTF-8 text, at most MAX_LINE bytes."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BodyError(400, "Bad request") from None
    if not text or "\n" in text or len(body) > MAX_LINE:
        raise BodyError(400, "Bad request")


def all_lines(pres_uri: str, bodies: Sequence[bytes], off_index: int | None) -> bytes:
    """agg_nbody: every live publication's line, oldest first; the one being removed left out."""
    lines = [b.strip() for i, b in enumerate(bodies) if i != off_index]
    return b"".join(line + b"\n" for line in lines) or b"(nothing)\n"


def numbered(subscription: Any, body: bytes) -> bytes:
    """aux_body_processing: this watcher's NOTIFY counter on top (0 on the first NOTIFY)."""
    return b"seq: %d\n" % subscription.version + body


class PresenceExampleModule(Module):
    name = "presence_example"
    depends = ("presence",)
    params = (Param("default_expires", int, 600, "Expires granted when a request has none"),)

    def check(self) -> None:
        presence = bind_presence(self.server)
        if presence is None:
            raise ConfigError("presence_example needs the presence module loaded before it")
        presence.add_event(PresenceEvent(
            EVENT_NAME, "text/plain", default_expires=self.param("default_expires"),
            evs_publ_handl=check_status_line, agg_nbody=all_lines, aux_body_processing=numbered,
            build_empty_pres_info=lambda pres_uri: b"(nothing)\n", mandatory_body=True))


MODULE = PresenceExampleModule
