"""Which transaction a message belongs to (RFC 3261 17.1.3 and 17.2.3).

Server side, 17.2.3: when the top Via branch starts with the magic cookie "z9hG4bK", a request matches
the transaction whose request had the same branch, the same sent-by in the top Via, and the same method
(ACK matches its INVITE). Otherwise (an RFC 2543 peer) the fallback compares Request-URI, From tag,
Call-ID, CSeq number and top Via; choice: To tag is left out of that fallback so ACKs (which carry the
tag our final response added) find their INVITE - this is also what OpenSIPS's tm does for non-3261 ACKs.

Client side, 17.1.3: a response matches when its top Via branch equals the request's and its CSeq
method equals the request's method.
"""

from __future__ import annotations

from routescript.sip import SIPRequest, SIPResponse, Via

MAGIC_COOKIE = "z9hG4bK"
_COOKIE_LEN = len(MAGIC_COOKIE)

# ("3261", branch, sent-by, method) or the RFC 2543 fallback's longer tuple; only hashed and compared.
ServerKey = tuple[object, ...]
ClientKey = tuple[str, str]   # (branch, method)


def _sent_by(via: Via) -> tuple[str, int | None]:
    host = via.host.lower()
    if host[:1] == "[" and host[-1:] == "]":   # an IPv6reference: compared without its brackets
        host = host[1:-1]
    return host, via.port


def server_key(request: SIPRequest) -> ServerKey:
    """The key of the server transaction `request` belongs to (ParseError on a broken top Via)."""
    via = request.via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch[:_COOKIE_LEN] == MAGIC_COOKIE:
        return ("3261", branch, _sent_by(via), method)
    return ("2543", request.ruri, request.from_.tag, request.call_id, request.cseq.number,
            _sent_by(via), branch, method)


def client_key_of_request(request: SIPRequest) -> ClientKey:
    return (request.via.branch or "", request.method)


def client_key_of_response(response: SIPResponse) -> ClientKey:
    return (response.via.branch or "", response.cseq.method)
