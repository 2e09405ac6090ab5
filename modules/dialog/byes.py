"""The BYEs the dialog module sends itself (bye-on-timeout, dlg_end_dlg): one to each side of a
confirmed dialog, built from what the dialog learnt (Contacts, route sets, tags, CSeqs, sockets) and sent
through the server's in-dialog request sender."""

from __future__ import annotations

import logging
from typing import Any

from routescript.sip import ParseError, SIPResponse

from .core import Dialog

log = logging.getLogger("routescript.dialog")


def parse_extra_headers(text: str) -> tuple[tuple[str, str], ...]:
    """dlg_extra_hdrs: "Name: value\\r\\n" lines (OpenSIPS writes them as they are)."""
    out: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t"):
            raise ValueError(f"dlg_extra_hdrs: {line!r} is not a 'Name: value' header line")
        out.append((name.strip(), value.strip()))
    return tuple(out)


class ByeSender:
    """BYEs both ways for a dialog; `extra_headers` (dlg_extra_hdrs) go in each."""

    def __init__(self, server: Any, extra_headers: tuple[tuple[str, str], ...]) -> None:
        self.server = server
        self.extra_headers = extra_headers

    def send(self, dlg: Dialog, extra: tuple[tuple[str, str], ...] = ()) -> None:
        requests = getattr(self.server, "requests", None)
        if requests is None:
            log.error("dialog %s (Call-ID %s): no request sender: BYEs not sent", dlg.dlg_id, dlg.call_id)
            return
        from routescript.core.requests import OutgoingRequest, dialog_route

        to_tagged = f"{dlg.to_header};tag={dlg.to_tag}" if dlg.to_tag else dlg.to_header
        legs = [  # (target, route set, From, To, CSeq, socket, label)
            (dlg.callee_contact, dlg.callee_route, dlg.from_header, to_tagged, dlg.caller_cseq + 1,
             dlg.callee_socket or dlg.caller_socket, "callee"),
            (dlg.caller_contact, dlg.caller_route, to_tagged, dlg.from_header,
             max(dlg.callee_cseq, 0) + 1, dlg.caller_socket, "caller")]
        for target, route, from_h, to_h, cseq, socket, label in legs:
            if not target:
                log.warning("dialog %s (Call-ID %s): no Contact of the %s: no BYE", dlg.dlg_id, dlg.call_id,
                            label)
                continue
            try:
                ruri, routes = dialog_route(target, route)
            except ParseError as exc:
                log.warning("dialog %s: BYE to the %s not sent: %s", dlg.dlg_id, label, exc.reason)
                continue
            headers = [("Route", r) for r in routes]
            headers += [("From", from_h), ("To", to_h), ("Call-ID", dlg.call_id), ("CSeq", f"{cseq} BYE"),
                        ("Max-Forwards", "70"), *self.extra_headers, *extra]
            request = OutgoingRequest("BYE", ruri, tuple(headers))
            label_copy = label

            def done(response: SIPResponse, label: str = label_copy) -> None:
                log.info("dialog %s (Call-ID %s): BYE to the %s: %d", dlg.dlg_id, dlg.call_id, label,
                         response.status)
            try:
                requests.send_in_dialog(request, done, socket=socket)
            except (ParseError, OSError, ValueError) as exc:
                log.warning("dialog %s: BYE to the %s not sent: %s", dlg.dlg_id, label, exc)
