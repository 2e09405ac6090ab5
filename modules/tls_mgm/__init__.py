"""tls_mgm - TLS domains, their certificates and SSL contexts (contexts.py: the one place a TLS transport
gets its contexts), the $tls_* pseudo-variables and is_peer_verified() (docs/modules/tls_mgm.md)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from routescript.core.module import ConfigError, Module, Param, mi_command, script_function
from routescript.script.context import REQUEST_ROUTE, MsgContext
from routescript.script.registry import PVarSpec

from .certinfo import COMPONENTS, SAN_KINDS, CertInfo, cert_info, pem_file_info
from .contexts import TlsContexts
from .domains import DOMAIN_PARAMS, DomainError, DomainTable, build_table

if TYPE_CHECKING:
    from routescript.sip import SocketInfo

_DB = "the TLS domains table (db_url) is not implemented: define the domains with server_domain/client_domain"
_AVP = ("client domains are matched by address only (client_tls_domain_avp/client_sip_domain_avp not "
        "implemented)")


def _library(value: Any) -> None:
    if str(value) not in ("auto", "openssl"):
        raise ValueError(f"tls_library \"{value}\": routescript uses Python's ssl module (OpenSSL): auto or "
                         "openssl")


class TlsMgmModule(Module):
    name = "tls_mgm"
    params = (
        Param("server_domain", str, None, "a TLS server domain's name", multi=True),
        Param("client_domain", str, None, "a TLS client domain's name", multi=True),
        Param("certificate", str, None, "[dom]certificate file (PEM)", multi=True),
        Param("private_key", str, None, "[dom]private key file (PEM)", multi=True),
        Param("ca_list", str, None, "[dom]trusted CAs (PEM file)", multi=True),
        Param("ca_dir", str, None, "[dom]trusted CAs (hashed directory)", multi=True),
        Param("crl_dir", str, None, "[dom]certificate revocation lists (hashed directory)", multi=True),
        Param("crl_check_all", str, None, "[dom]1: check the CRLs of the whole chain", multi=True),
        Param("verify_cert", str, None, "[dom]0/1: verify the peer's certificate", multi=True),
        Param("require_cert", str, None, "[dom]0/1: a client must send a certificate", multi=True),
        Param("tls_method", str, None, "[dom]SSLv23, TLSv1_2, TLSv1_3 or a range LOW-HIGH", multi=True),
        Param("ciphers_list", str, None, "[dom]OpenSSL cipher list (TLS 1.2 and below)", multi=True),
        Param("dh_params", str, None, "[dom]Diffie-Hellman parameters (PEM file)", multi=True),
        Param("ec_curve", str, None, "[dom]elliptic curve for ECDHE", multi=True),
        Param("match_ip_address", str, None, "[dom]ip:port list or *", multi=True),
        Param("match_sip_domain", str, None, "[dom]SNI names (wildcards), * or none", multi=True),
        Param("tls_library", str, "auto", "auto or openssl (Python's ssl)", check=_library),
        Param("client_tls_domain_avp", str, "", "not implemented", later=_AVP),
        Param("client_sip_domain_avp", str, "", "not implemented", later=_AVP),
        Param("db_url", str, "", "not implemented", later=_DB),
        Param("db_table", str, "tls_mgm", "not implemented", later=_DB),
        *(Param(col, str, default, "not implemented", later=_DB) for col, default in (
            ("domain_col", "domain"), ("match_ip_address_col", "match_ip_address"),
            ("match_sip_domain_col", "match_sip_domain"), ("type_col", "type"), ("tls_method_col", "method"),
            ("verify_cert_col", "verify_cert"), ("require_cert_col", "require_cert"),
            ("certificate_col", "certificate"), ("private_key_col", "private_key"),
            ("crl_check_all_col", "crl_check_all"), ("crl_dir_col", "crl_dir"), ("ca_list_col", "ca_list"),
            ("ca_dir_col", "ca_dir"), ("ciphers_list_col", "cipher_list"), ("dh_params_col", "dh_params"),
            ("ec_curve_col", "ec_curve"))),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.table = DomainTable((), ())
        self._contexts: TlsContexts | None = None
        self._my_certs: dict[str, CertInfo | None] = {}

    def check(self) -> None:
        try:
            self.table = build_table(self.param("server_domain"), self.param("client_domain"),
                                     {p: self.param(p) for p in DOMAIN_PARAMS})
            self._contexts = TlsContexts(self.table)
        except DomainError as exc:
            raise ConfigError(str(exc)) from None
        self._my_certs = {f"{d.side}:{d.name}": pem_file_info(d.certificate) if d.certificate else None
                          for d in self.table.domains}

    def before_chroot(self, sockets: Sequence[SocketInfo]) -> None:
        """The server contexts of the tls and wss sockets, built now from their certificate files: a
        worker process adopts its sockets after the chroot, where the files are not (the workers inherit
        the contexts). A socket no domain matches is left to the worker, which says so."""
        for info in sockets:
            if info.proto in ("tls", "wss"):
                try:
                    self.contexts.server_context(info)
                except LookupError:
                    pass

    @property
    def contexts(self) -> TlsContexts:
        """The SSL contexts of every domain, built at load (check): proto_tls hands them to the transport;
        proto_wss too."""
        assert self._contexts is not None, "tls_mgm used before check()"
        return self._contexts

    # --- script ------------------------------------------------------------------------------------

    @script_function("is_peer_verified", routes=(REQUEST_ROUTE,))
    def is_peer_verified(self, ctx: MsgContext) -> int:
        """1 when the request came over TLS and the peer's certificate was verified in the handshake."""
        session = self._session(ctx)
        return 1 if session is not None and session.verified else -1

    def _session(self, ctx: MsgContext) -> Any:
        """The TLS session the message came over (tls or wss): the one its Source carries when another
        worker process read it (docs/workers.md 4), else the transport's for its connection."""
        source = ctx.source
        transport = self.server.transport
        if source is None or source.proto not in ("tls", "wss"):
            return None
        if source.tls is not None:
            return source.tls
        return None if transport is None else transport.tls_session(source.conn_id)

    def _cert(self, ctx: MsgContext, whose: str) -> CertInfo | None:
        session = self._session(ctx)
        if session is None:
            return None
        if whose == "peer":
            return cert_info(session.peer_cert) if session.peer_cert else None
        side = "server" if session.server_side else "client"
        return self._my_certs.get(f"{side}:{session.domain}")

    def pvars(self) -> list[PVarSpec]:
        """The $tls_* variables OpenSIPS's tls_mgm exports, from one table (tls_mgm.c mod_items)."""
        specs = [self._pv(name, fn) for name, fn in self._session_vars().items()]
        for whose in ("peer", "my"):
            for name, read in _cert_vars(whose).items():
                specs.append(self._pv(name, self._cert_reader(whose, read)))
        return specs

    def _pv(self, name: str, get: Callable[[MsgContext], Any]) -> PVarSpec:
        return PVarSpec(name, lambda ctx, key, index: get(ctx), module=self.name)

    def _cert_reader(self, whose: str, read: Callable[[CertInfo], Any]) -> Callable[[MsgContext], Any]:
        def get(ctx: MsgContext) -> Any:
            cert = self._cert(ctx, whose)
            return read(cert) if cert is not None else None
        return get

    def _session_vars(self) -> dict[str, Callable[[MsgContext], Any]]:
        def of(read: Callable[[Any], Any]) -> Callable[[MsgContext], Any]:
            def get(ctx: MsgContext) -> Any:
                session = self._session(ctx)
                return read(session) if session is not None else None
            return get

        return {"tls_version": of(lambda s: s.version), "tls_description": of(lambda s: s.description),
                "tls_cipher_info": of(lambda s: s.cipher), "tls_cipher_bits": of(lambda s: s.bits),
                "tls_peer_verified": of(lambda s: int(s.verified)),
                # a revoked certificate fails the handshake when crl_dir is set; without CRLs nothing says
                # it is revoked (OpenSIPS answers 0 then too)
                "tls_peer_revoked": of(lambda s: 0)}

    # --- MI ------------------------------------------------------------------------------------------

    @mi_command("tls_mgm:list", aliases=("tls_list",), workers="one")
    async def mi_list(self) -> list[dict[str, Any]]:
        """Every TLS domain with its settings."""
        return [{"name": d.name, "type": d.side, "match_ip_address": list(d.match_ip_address),
                 "match_sip_domain": list(d.match_sip_domain), "tls_method": d.method.text,
                 "verify_cert": int(d.verify_cert), "require_cert": int(d.require_cert),
                 "certificate": d.certificate, "private_key": d.private_key, "ca_list": d.ca_list,
                 "ca_dir": d.ca_dir, "crl_dir": d.crl_dir, "ciphers_list": d.ciphers_list,
                 "dh_params": d.dh_params, "ec_curve": d.ec_curve} for d in self.table.domains]


def _cert_vars(whose: str) -> dict[str, Callable[[CertInfo], Any]]:
    """$tls_<whose>_* -> how it reads a certificate."""
    prefix = f"tls_{whose}_"
    out: dict[str, Callable[[CertInfo], Any]] = {
        prefix + "version": lambda c: c.version, prefix + "serial": lambda c: c.serial,
        prefix + "subject": lambda c: c.oneline("subject"), prefix + "issuer": lambda c: c.oneline("issuer")}
    for part in ("subject", "issuer"):
        for comp in COMPONENTS:
            if comp == "serial" and part == "issuer":
                continue   # OpenSIPS has $tls_*_subject_serial only
            out[f"{prefix}{part}_{comp}"] = lambda c, p=part, k=comp: c.component(p, k)
    for kind in SAN_KINDS:
        out[f"{prefix}san_{kind}"] = lambda c, k=kind: c.san(k)
    if whose == "peer":
        out.update({"tls_peer_expired": lambda c: int(c.expired(_dt.datetime.now(_dt.UTC))),
                    "tls_peer_selfsigned": lambda c: int(c.self_signed),
                    "tls_peer_notBefore": lambda c: c.not_before, "tls_peer_notAfter": lambda c: c.not_after})
    return out


MODULE = TlsMgmModule
