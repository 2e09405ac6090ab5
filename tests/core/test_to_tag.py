"""Server.to_tag reads the From tag without the full name-addr parse; it must agree with that parse."""

from __future__ import annotations

import pytest

from routescript.core.server import Server, _from_tag
from routescript.sip import parse_message


def _msg(from_value: str, branch: str = "z9hG4bK1") -> object:
    return parse_message((f"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch={branch}\r\n"
                          f"From: {from_value}\r\nTo: <sip:x@y>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n"
                          ).encode())


@pytest.mark.parametrize("from_value", [
    "<sip:a@b>;tag=abc", '"X" <sip:a@b;tag=no>;tag=yes', "sip:a@b;tag=zz;x=1", "<sip:a@b>",
    "<sip:a@b> ; TAG = Q1-2.3", "<sip:a@b>;x=1;tag=t;y", "Bob <sips:bob@[::1]:5061>;tag=7f.e-2",
])
def test_from_tag_agrees_with_the_parser(from_value: str) -> None:
    msg = _msg(from_value)
    assert _from_tag(msg) == (msg.from_.tag or "")  # type: ignore[attr-defined]


def test_to_tag_is_stable_per_request_and_differs_between_requests() -> None:
    a1, a2 = _msg("<sip:a@b>;tag=1"), _msg("<sip:a@b>;tag=1")
    assert Server.to_tag(a1) == Server.to_tag(a2) and Server.to_tag(a1).startswith("rs.")
    assert Server.to_tag(_msg("<sip:a@b>;tag=2")) != Server.to_tag(a1)
    assert Server.to_tag(_msg("<sip:a@b>;tag=1", branch="z9hG4bK2")) != Server.to_tag(a1)
