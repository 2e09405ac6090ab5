"""The SSL contexts of the TLS domains: the one place a TLS transport (proto_tls; later proto_wss) gets
them from.

    contexts = TlsContexts(table)
    contexts.server_context(SocketInfo("tls", "127.0.0.1", 5061))  # accepted connections' context
    contexts.client_context(Destination("tls", "10.0.0.1", 5061), server_name=None)

`server_context(socket)` is built per listening socket: it starts with the domain that matches the socket
without a Server Name Indication, and its SNI callback switches the handshake to the domain the name
matches (match_sip_domain), or refuses it when none does. `client_context(dest)` is the context of the
client domain matching dest's ip:port. Both raise LookupError when no domain matches.

Every domain's context is built once at load (check()): a missing file, a key that does not fit its
certificate, a cipher list OpenSSL does not know are load errors naming the domain and the parameter.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

from routescript.sip.address import Destination, SocketInfo

from .domains import DomainError, DomainTable, TlsDomain

log = logging.getLogger("routescript.tls_mgm")

# OpenSIPS's default ca_dir; used when it exists, else (and without ca_list) the system's trust store.
DEFAULT_CA_DIR = "/etc/pki/CA/"

_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
             "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}


class DomainContext(ssl.SSLContext):
    """An SSLContext that says which TLS domain it belongs to (TlsSession.domain, $tls_my_*)."""

    tls_domain: str = ""


def build_context(domain: TlsDomain) -> DomainContext:
    """The SSL context of `domain`; DomainError naming the domain and parameter when a setting cannot
    be used (file missing or unreadable, key not matching the certificate, unknown ciphers...)."""
    server = domain.side == "server"
    ctx = DomainContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.tls_domain = domain.name
    # OpenSIPS verifies the chain, never the peer's name (there is no SIP-level name to check it against
    # at handshake time; RFC 5922's matching is left to the script with $tls_peer_san_*).
    ctx.check_hostname = False
    _what = f"TLS {domain.side} domain [{domain.name}]"
    if domain.method.low is not None:
        ctx.minimum_version = _VERSIONS[domain.method.low]
    if domain.method.high is not None:
        ctx.maximum_version = _VERSIONS[domain.method.high]
    if server and not (domain.certificate and domain.private_key):
        raise DomainError(f"{_what}: a server domain needs a certificate and a private_key "
                          f"(modparam(\"tls_mgm\", \"certificate\", \"[{domain.name}]/path/cert.pem\") "
                          "and private_key)")
    if domain.certificate:
        _load(ctx.load_cert_chain, _what, "certificate/private_key", domain.certificate,
              domain.private_key or None)
    elif domain.private_key:
        raise DomainError(f"{_what}: private_key without a certificate")
    _load_trust(ctx, domain, _what)
    if not domain.verify_cert:
        ctx.verify_mode = ssl.CERT_NONE
    elif server and not domain.require_cert:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED
    if domain.ciphers_list:
        _load(ctx.set_ciphers, _what, "ciphers_list", domain.ciphers_list)
    if domain.dh_params:
        _load(ctx.load_dh_params, _what, "dh_params", domain.dh_params)
    if domain.ec_curve:
        _load(ctx.set_ecdh_curve, _what, "ec_curve", domain.ec_curve)
    return ctx


def _load_trust(ctx: ssl.SSLContext, domain: TlsDomain, what: str) -> None:
    """ca_list (a file), ca_dir (a hashed directory), crl_dir; without ca_list and ca_dir the default
    directory when it exists, else the system's default trust store (our choice: OpenSIPS would trust
    nothing, and every verification would fail)."""
    if domain.ca_list:
        _load(ctx.load_verify_locations, what, "ca_list", domain.ca_list)
    ca_dir = domain.ca_dir
    if ca_dir:
        if not os.path.isdir(ca_dir):
            raise DomainError(f"{what}: ca_dir \"{ca_dir}\" is not a directory")
        ctx.load_verify_locations(capath=ca_dir)
    elif not domain.ca_list:
        if os.path.isdir(DEFAULT_CA_DIR):
            ctx.load_verify_locations(capath=DEFAULT_CA_DIR)
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH if domain.side == "server" else
                                   ssl.Purpose.SERVER_AUTH)
    if domain.crl_dir:
        if not os.path.isdir(domain.crl_dir):
            raise DomainError(f"{what}: crl_dir \"{domain.crl_dir}\" is not a directory")
        ctx.load_verify_locations(capath=domain.crl_dir)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN if domain.crl_check_all else ssl.VERIFY_CRL_CHECK_LEAF
    elif domain.crl_check_all:
        raise DomainError(f"{what}: crl_check_all needs crl_dir")


def _load(call: Any, what: str, param: str, *args: Any) -> None:
    try:
        call(*args)
    except FileNotFoundError as exc:
        raise DomainError(f"{what}: {param}: {exc.filename or args[0]}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise DomainError(f"{what}: {param} \"{args[0]}\" cannot be used: {exc}") from None


class TlsContexts:
    """The contexts of every domain of `table` (built at once: DomainError on the first unusable one);
    proto_tls hands them to the transport (routescript.transport.tls.TlsProvider)."""

    def __init__(self, table: DomainTable) -> None:
        self.table = table
        self._client = {d.name: build_context(d) for d in table.client}
        for domain in table.server:
            # checked now; each listening socket gets its own (server_context). The implicit domain of a
            # script without server domains is checked when a tls socket needs it.
            if not (domain.implicit and not domain.certificate):
                build_context(domain)
        self._servers: dict[SocketInfo, DomainContext] = {}

    def server_context(self, socket: SocketInfo) -> ssl.SSLContext:
        """The context connections accepted on `socket` begin their handshake with (see the module doc).
        LookupError when no server domain matches the socket's address."""
        ctx = self._servers.get(socket)
        if ctx is not None:
            return ctx
        candidates = self.table.server_candidates(socket.host, socket.port)
        # the implicit "default" domain serves only when it has a certificate or nothing else matches
        candidates = [d for d in candidates if d.certificate or not d.implicit] or candidates
        if not candidates:
            raise LookupError(f"no TLS server domain matches {socket.name} (match_ip_address)")
        try:
            contexts = {d.name: build_context(d) for d in candidates}
        except DomainError as exc:
            raise LookupError(f"{socket.name}: {exc}") from None
        first = self.table.match_server(socket.host, socket.port, None, candidates) or candidates[0]

        def on_sni(tls: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
            domain = self.table.match_server(socket.host, socket.port, server_name, candidates)
            if domain is None:
                log.info("%s: no TLS server domain for SNI %r: handshake refused", socket.name, server_name)
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            chosen = contexts[domain.name]
            if tls.context is not chosen:
                tls.context = chosen
            return None

        for ctx in contexts.values():
            ctx.sni_callback = on_sni
        self._servers[socket] = contexts[first.name]
        return contexts[first.name]

    def client_context(self, dest: Destination, server_name: str | None = None) -> ssl.SSLContext:
        """The context of the client domain matching dest's ip:port (`server_name` is sent as SNI by the
        caller; client domains are not matched by name). LookupError when none matches."""
        domain = self.table.match_client(dest.host, dest.port)
        if domain is None:
            raise LookupError(f"no TLS client domain matches {dest} (match_ip_address)")
        return self._client[domain.name]

    def domain_context(self, name: str, side: str) -> DomainContext | None:
        """The context of domain `name` (its client context, or any server context built for it)."""
        if side == "client":
            return self._client.get(name)
        return next((c for c in self._servers.values() if c.tls_domain == name), None)
