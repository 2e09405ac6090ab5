"""TLS domains (OpenSIPS tls_mgm): their settings from the `[dom]value` module parameters, and which
domain serves a connection - sans-IO, no ssl here (contexts.py builds the SSL contexts).

A domain is a server domain (incoming connections) or a client domain (connections we open), defined by
`server_domain` / `client_domain`; every other parameter names its domain in brackets:
    modparam("tls_mgm", "certificate", "[dom1]/certs/atlanta.pem")
Matching (tls_mgm's README, "match_ip_address" and "match_sip_domain"): a server domain matches the
listening socket a connection arrives on ("ip:port" or "*") and the TLS Server Name Indication ("*": any
name or none; "none": only a connection without SNI; shell-style wildcards; the most specific wins);
a client domain matches the destination ip:port.

Choices where OpenSIPS 3.x differs or is silent (docs/modules/tls_mgm.md):
- a value without "[dom]" sets the implicit domain "default" (a server and a client domain, matching
  any address and name, chosen only when no named domain matches): OpenSIPS 3.x refuses such a value
  ("No TLS domain name"), 2.x applied it to its default domains. Without any server (client) domain the
  implicit one is there too.
- a server domain needs a certificate and a private key (OpenSIPS falls back to CFG_DIR/tls/cert.pem
  and ckey.pem: a load error here names the parameter to set instead).
- a name defined both as server_domain and client_domain gets its [name] settings on both.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from routescript.sip.hosts import bare_host, host_for_uri, normalize_host

Side = Literal["server", "client"]
DEFAULT_DOMAIN = "default"

# tls_method: OpenSIPS's method names, lower-cased -> the protocol version they name (None: the
# library's lowest / highest). SSLv23 is "any version" (with an SSLv2-compatible hello in OpenSSL).
METHODS: dict[str, str | None] = {"sslv23": None, "tlsv1": "TLSv1", "tlsv1_1": "TLSv1_1",
                                  "tlsv1_2": "TLSv1_2", "tlsv1_3": "TLSv1_3"}

# "[name]value" (tls_params.c split_param_val: spaces before "[", a non-empty name, a non-empty value)
_DOMAIN_VALUE = re.compile(r"^\s*\[(?P<name>[^\]]*)\](?P<value>.*)$", re.DOTALL)


class DomainError(ValueError):
    """A tls_mgm parameter that cannot be used; the message names the parameter and the domain."""


@dataclass(frozen=True, slots=True)
class MethodRange:
    """The protocol versions a domain accepts: `low`..`high` as METHODS values (None: no bound)."""

    low: str | None = None
    high: str | None = None
    text: str = "SSLv23"


def parse_method(text: str) -> MethodRange:
    """tls_method: a method name ("TLSv1_2": that version only, "SSLv23": any) or a range "LOW-HIGH"
    where either side may be left out ("TLSv1_2-": 1.2 or higher, "-": any)."""
    value = text.strip()
    if "-" in value:
        low_text, _, high_text = value.partition("-")
        low = _method(low_text, text) if low_text.strip() else None
        high = _method(high_text, text) if high_text.strip() else None
        return MethodRange(low, high, value)
    version = _method(value, text)
    return MethodRange(version, version, value)


def _method(name: str, whole: str) -> str | None:
    key = name.strip().lower()
    if key not in METHODS:
        raise DomainError(f"tls_method \"{whole}\": unknown method \"{name.strip()}\" (SSLv23, TLSv1, "
                          "TLSv1_1, TLSv1_2, TLSv1_3, or a range LOW-HIGH; SSLv2/SSLv3 are not supported)")
    if key == "sslv23" and name.strip() != whole.strip():
        raise DomainError(f"tls_method \"{whole}\": SSLv23 is not a bound of a range")
    return METHODS[key]


@dataclass(frozen=True, slots=True)
class TlsDomain:
    """One TLS domain's settings (tls_mgm's defaults: verify_cert 1, require_cert 1, SSLv23, any
    address, any SIP domain). `implicit`: the "default" domain made when the script names none."""

    name: str
    side: Side
    certificate: str = ""
    private_key: str = ""
    ca_list: str = ""
    ca_dir: str = ""
    crl_dir: str = ""
    crl_check_all: bool = False
    verify_cert: bool = True
    require_cert: bool = True
    method: MethodRange = field(default_factory=MethodRange)
    ciphers_list: str = ""
    dh_params: str = ""
    ec_curve: str = ""
    match_ip_address: tuple[str, ...] = ("*",)
    match_sip_domain: tuple[str, ...] = ("*",)
    implicit: bool = False

    def matches_address(self, host: str, port: int) -> bool:
        """match_ip_address: "*" or one "ip:port" equal to host:port."""
        want = f"{normalize_host(host)}:{port}"
        return any(a == "*" or a == want for a in self.match_ip_address)

    def name_rank(self, server_name: str | None) -> int:
        """How well match_sip_domain matches the SNI `server_name` (None: none sent): 0 = no match, then
        "*" < a wildcard (longer patterns rank higher: "*.bar.com" below "*.foo.bar.com") < the exact name
        (or "none" for no name)."""
        best = 0
        for pattern in self.match_sip_domain:
            if pattern == "*":
                rank = 1
            elif pattern == "none":
                rank = 1 << 20 if server_name is None else 0
            elif server_name is None:
                rank = 0
            elif pattern == server_name.lower():
                rank = 1 << 20
            elif fnmatch.fnmatchcase(server_name.lower(), pattern):
                rank = 2 + len(pattern)
            else:
                rank = 0
            best = max(best, rank)
        return best

    def address_rank(self, host: str, port: int) -> int:
        """2 for an exact ip:port match, 1 for "*", 0 for none."""
        want = f"{normalize_host(host)}:{port}"
        if want in self.match_ip_address:
            return 2
        return 1 if "*" in self.match_ip_address else 0


class DomainTable:
    """Every server and client domain of the configuration, and the matching rules."""

    def __init__(self, server: Sequence[TlsDomain], client: Sequence[TlsDomain]) -> None:
        self.server = tuple(server)
        self.client = tuple(client)

    @property
    def domains(self) -> tuple[TlsDomain, ...]:
        return self.server + self.client

    def server_candidates(self, host: str, port: int) -> list[TlsDomain]:
        """The server domains a connection accepted on host:port may be served by (any SNI)."""
        return [d for d in self.server if d.matches_address(host, port)]

    def match_server(self, host: str, port: int, server_name: str | None,
                     among: Sequence[TlsDomain] | None = None) -> TlsDomain | None:
        """The server domain for a connection accepted on host:port asking for `server_name` (SNI; None:
        no SNI): the best name match, then the most exact address, a named domain before the implicit
        one, the first defined on a tie. None when nothing matches (the handshake is refused).
        `among`: only these candidates (default: server_candidates)."""
        candidates = self.server_candidates(host, port) if among is None else among
        return _best(candidates, host, port, server_name)

    def match_client(self, host: str, port: int) -> TlsDomain | None:
        """The client domain for a connection to host:port (match_ip_address; client domains do not
        match SIP domains here: client_sip_domain_avp is not implemented)."""
        candidates = [d for d in self.client if d.matches_address(host, port)]
        return _best(candidates, host, port, None, names=False)


def _best(candidates: Iterable[TlsDomain], host: str, port: int, server_name: str | None, *,
          names: bool = True) -> TlsDomain | None:
    best: tuple[int, int, int] | None = None
    chosen = None
    for domain in candidates:
        name_rank = domain.name_rank(server_name) if names else 1
        if name_rank == 0:
            continue
        rank = (name_rank, domain.address_rank(host, port), 0 if domain.implicit else 1)
        if best is None or rank > best:
            best, chosen = rank, domain
    return chosen


# --- from the module parameters ------------------------------------------------------------------------

# The per-domain parameters and the TlsDomain field each sets.
DOMAIN_PARAMS = ("certificate", "private_key", "ca_list", "ca_dir", "crl_dir", "crl_check_all", "verify_cert",
                 "require_cert", "tls_method", "ciphers_list", "dh_params", "ec_curve", "match_ip_address",
                 "match_sip_domain")


def split_domain_value(param: str, text: str) -> tuple[str, str]:
    """("dom", "value") of "[dom]value"; (DEFAULT_DOMAIN, text) without brackets."""
    m = _DOMAIN_VALUE.match(text)
    if m is None:
        return DEFAULT_DOMAIN, text.strip()
    name, value = m.group("name").strip(), m.group("value").strip()
    if not name:
        raise DomainError(f"{param} \"{text}\": empty TLS domain name in []")
    if not value:
        raise DomainError(f"{param} \"{text}\": no value after [{name}]")
    return name, value


def build_table(server_names: Sequence[str], client_names: Sequence[str],
                settings: dict[str, Sequence[str]]) -> DomainTable:
    """The domains named by server_domain / client_domain, with every `[dom]value` of `settings`
    (parameter -> its values in script order) applied. DomainError names the first problem."""
    server = _declare(server_names, "server")
    client = _declare(client_names, "client")
    for param in DOMAIN_PARAMS:
        for text in settings.get(param, ()):
            name, value = split_domain_value(param, str(text))
            targets = [d for d in (server, client) if name in d]
            if not targets and name == DEFAULT_DOMAIN:
                for table, side in ((server, "server"), (client, "client")):
                    table[name] = TlsDomain(name, side, implicit=True)  # type: ignore[arg-type]
                targets = [server, client]
            if not targets:
                raise DomainError(f"{param} \"{text}\": TLS domain [{name}] is not defined (declare it with "
                                  "server_domain or client_domain first)")
            for table in targets:
                table[name] = _set(table[name], param, value, str(text))
    for table, side in ((server, "server"), (client, "client")):
        if not table:
            table[DEFAULT_DOMAIN] = TlsDomain(DEFAULT_DOMAIN, side, implicit=True)  # type: ignore[arg-type]
    return DomainTable(list(server.values()), list(client.values()))


def _declare(names: Sequence[str], side: Side) -> dict[str, TlsDomain]:
    out: dict[str, TlsDomain] = {}
    for raw in names:
        name = str(raw).strip()
        if not name or "[" in name or "]" in name:
            raise DomainError(f"{side}_domain \"{raw}\": a TLS domain name (no brackets, not empty)")
        if name in out:
            raise DomainError(f"{side}_domain \"{name}\": TLS domain already defined")
        out[name] = TlsDomain(name, side)
    return out


def _flag(param: str, value: str, text: str) -> bool:
    if value not in ("0", "1"):
        raise DomainError(f"{param} \"{text}\": expects 0 or 1")
    return value == "1"


def _set(domain: TlsDomain, param: str, value: str, text: str) -> TlsDomain:
    if param in ("verify_cert", "require_cert", "crl_check_all"):
        return replace(domain, **{param: _flag(param, value, text)})
    if param == "tls_method":
        try:
            return replace(domain, method=parse_method(value))
        except DomainError as exc:
            raise DomainError(f"{exc} (in \"{text}\")") from None
    if param == "match_ip_address":
        return replace(domain, match_ip_address=tuple(_address(a, text) for a in _list(value)))
    if param == "match_sip_domain":
        return replace(domain, match_sip_domain=tuple(n.lower() for n in _list(value)))
    return replace(domain, **{param: value})


def _list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise DomainError(f"empty list \"{value}\"")
    return items


def _address(item: str, text: str) -> str:
    """match_ip_address item: "*" or ip:port ("[v6]:port"), as "host:port" with the host normalised."""
    if item == "*":
        return item
    host, sep, port = item.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise DomainError(f"match_ip_address \"{text}\": \"{item}\" is not ip:port or *")
    return f"{normalize_host(bare_host(host))}:{int(port)}"


def describe_address(host: str, port: int) -> str:
    return f"{host_for_uri(host)}:{port}"
