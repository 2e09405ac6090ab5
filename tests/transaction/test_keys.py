"""Transaction matching keys (RFC 3261 17.2.3 server side, 17.1.3 client side)."""

from __future__ import annotations

from routescript.sip import SIPRequest, parse_message
from routescript.transaction.keys import server_key


def _req(via: str, method: str = "SUBSCRIBE", call_id: str = "k1", from_tag: str = "f1") -> SIPRequest:
    return parse_message((f"{method} sip:x@h SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag={from_tag}\r\n"
                          f"To: <sip:x@h>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\r\n"
                          ).encode())  # type: ignore[return-value]


def test_rfc3261_key_is_branch_sent_by_and_method() -> None:
    key = server_key(_req("SIP/2.0/UDP Host.Example:5070;branch=z9hG4bKab"))
    assert key == ("3261", "z9hG4bKab", ("host.example", 5070), "SUBSCRIBE")
    # sent-by compared without case, IPv6 without its brackets
    assert server_key(_req("SIP/2.0/UDP HOST.example:5070;branch=z9hG4bKab")) == key
    v6 = server_key(_req("SIP/2.0/UDP [2001:DB8::1]:5070;branch=z9hG4bKab"))
    assert v6[2] == ("2001:db8::1", 5070)
    # another port, another branch, another method: another transaction
    assert server_key(_req("SIP/2.0/UDP host.example:5071;branch=z9hG4bKab")) != key
    assert server_key(_req("SIP/2.0/UDP host.example:5070;branch=z9hG4bKac")) != key
    assert server_key(_req("SIP/2.0/UDP host.example:5070;branch=z9hG4bKab", "PUBLISH")) != key


def test_ack_matches_its_invite() -> None:
    via = "SIP/2.0/UDP h:5060;branch=z9hG4bKinv"
    assert server_key(_req(via, "ACK")) == server_key(_req(via, "INVITE"))


def test_a_branch_without_the_magic_cookie_takes_the_rfc2543_fallback() -> None:
    key = server_key(_req("SIP/2.0/UDP h:5060;branch=old1"))
    assert key[0] == "2543" and "k1" in key and "f1" in key and "old1" in key
    assert server_key(_req("SIP/2.0/UDP h:5060;branch=old1", call_id="k2")) != key
    assert server_key(_req("SIP/2.0/UDP h:5060", from_tag="f2"))[0] == "2543"   # no branch at all
