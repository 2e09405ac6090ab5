"""TLS over the stream transport (RFC 3261 26.2, RFC 5630): what the transport asks of whoever holds the
certificates (a TlsProvider: modules/tls_mgm through proto_tls), the facts of an established session
(TlsSession, read by the $tls_* pseudo-variables), and the wording of a failed handshake for the log.

The transport does no certificate work of its own: it asks the provider for an ssl.SSLContext for a
listening socket (server side) or a destination (client side), and runs TLS over the connection's bytes
with a TlsStream (the ssl module's SSLObject over memory BIOs: sans-IO, the same on asyncio and uvloop,
and every handshake failure is ours to log - asyncio's own TLS transport drops them silently).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Protocol

from routescript.sip.address import Destination, SocketInfo


class TlsProvider(Protocol):
    """The SSL contexts of the TLS transport (modules/tls_mgm/contexts.py: TlsContexts).

    handshake_timeout: seconds a handshake may take, on accept and on connect (proto_tls's
        tls_handshake_timeout); then the connection is closed and logged.
    server_context(socket): the context a connection accepted on `socket` starts its handshake with (a
        Server Name Indication may switch it to another domain's context during the handshake).
    client_context(dest, server_name): the context for a connection we open to `dest`; `server_name`
        is the host name it was asked for (sent as SNI), None for an IP address.
    Both raise LookupError when no TLS domain matches (the connection is refused and logged).
    """

    handshake_timeout: float

    def server_context(self, socket: SocketInfo) -> ssl.SSLContext: ...

    def client_context(self, dest: Destination, server_name: str | None = None) -> ssl.SSLContext: ...


@dataclass(frozen=True, slots=True)
class TlsSession:
    """An established TLS session: what $tls_version, $tls_cipher_info, $tls_peer_* and is_peer_verified()
    read. `peer_cert` is the peer's certificate (DER), None when it sent none; `verified` is True when
    that certificate was checked against the trusted CAs during the handshake (a context that does not
    verify, verify_cert 0, never verifies); `domain` names the tls_mgm domain whose context served it."""

    version: str
    cipher: str
    description: str
    bits: int
    peer_cert: bytes | None
    verified: bool
    domain: str
    server_side: bool

    @classmethod
    def of(cls, tls: ssl.SSLObject | ssl.SSLSocket) -> TlsSession:
        cipher = tls.cipher() or ("", "", 0)
        peer = tls.getpeercert(binary_form=True)
        context = tls.context
        verified = peer is not None and context.verify_mode != ssl.CERT_NONE
        return cls(version=tls.version() or "", cipher=cipher[0], description=cipher[1], bits=int(cipher[2]),
                   peer_cert=peer, verified=verified, domain=str(getattr(context, "tls_domain", "")),
                   server_side=tls.server_side)


class TlsStream:
    """TLS over a byte stream, without I/O: feed it what the peer sent (`receive` returns the plaintext
    that came out), give it what to send (`send`), and write `pending()` to the peer after each call.

    `established` once the handshake is done; `closed` once the peer sent close_notify. ssl.SSLError from
    `receive` when the handshake or a record fails (then `pending()` may hold the alert to send)."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                    server_hostname=server_hostname or None)
        self.established = False
        self.closed = False
        if not server_side:
            self._handshake()   # the ClientHello

    def receive(self, data: bytes) -> bytes:
        self._incoming.write(data)
        if not self.established and not self._handshake():
            return b""
        out = bytearray()
        while True:
            try:
                chunk = self.ssl.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def send(self, data: bytes) -> None:
        self.ssl.write(data)

    def pending(self) -> bytes:
        return self._outgoing.read()

    def _handshake(self) -> bool:
        try:
            self.ssl.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.established = True
        return True


# OpenSSL's reasons for a first record that is no TLS record: a plaintext client on the TLS port (a SIP
# request starts "REGISTER sip:" or "OPTIONS ...": WRONG_VERSION_NUMBER, or HTTP_REQUEST for a request
# line OpenSSL recognises as HTTP's).
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
                      "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})


_CERT_ALERTS = {"CA", "CERTIFICATE"}   # UNKNOWN_CA, BAD_CERTIFICATE, CERTIFICATE_EXPIRED, ...


def handshake_failure(exc: BaseException, timeout: float) -> tuple[str, str]:
    """(kind, text) for the log line of a failed handshake: the kind (for rate-limiting the lines of
    one address per kind) and what happened, in words a server operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls-cert", f"certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        if reason in _NOT_TLS:
            return "tls-not-tls", f"the peer does not speak TLS ({reason}): a plaintext client on a TLS port?"
        if reason == "CALLBACK_FAILED":   # the provider's SNI callback refused the name
            return "tls-domain", "its Server Name Indication matches no TLS server domain (match_sip_domain)"
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "tls-cert", "the peer sent no certificate and require_cert is set"
        if "CERTIFICATE" in reason:
            return "tls-cert", f"certificate not accepted ({reason})"
        if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_", "TLSV13_ALERT_")):
            about_cert = _CERT_ALERTS.intersection(reason.split("_"))
            hint = " (it does not accept our certificate)" if about_cert else ""
            return "tls-alert", f"the peer ended the handshake with the alert {reason}{hint}"
        return "tls-handshake", f"TLS error {reason}"
    if isinstance(exc, TimeoutError) or (isinstance(exc, ConnectionAbortedError) and "longer" in str(exc)):
        return "tls-timeout", f"no handshake within {timeout * 1000:.0f} ms (tls_handshake_timeout)"
    if isinstance(exc, LookupError):
        return "tls-domain", str(exc.args[0] if exc.args else exc)
    return "tls-handshake", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
