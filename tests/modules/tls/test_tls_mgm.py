"""tls_mgm and proto_tls at load time: the [dom]value parameters, domain matching (address, SNI), the
protocol version ranges, and every setting that cannot be used refused with file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.core.server import LoadError, Server
from routescript.modules.tls_mgm.domains import (DomainError, build_table, parse_method,
                                                 split_domain_value)
from routescript.testing.certs import TestPki

HEAD = ('socket = udp:127.0.0.1:5070\nsocket = tls:127.0.0.1:5071\n'
        'loadmodule "tls_mgm.so"\nloadmodule "proto_tls.so"\nloadmodule "sl.so"\n')


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.make(tmp_path_factory.mktemp("pki"))


def load(tmp_path: Path, text: str, head: str = HEAD) -> Server:
    path = tmp_path / "s.cfg"
    path.write_text(head + text)
    server = Server()
    server.load(str(path))
    return server


def errors(tmp_path: Path, text: str, head: str = HEAD) -> list[str]:
    with pytest.raises(LoadError) as info:
        load(tmp_path, text, head)
    return [str(d).splitlines()[0] for d in info.value.diagnostics]


def server_domain(pki: TestPki, name: str = "srv") -> str:
    return (f'modparam("tls_mgm", "server_domain", "{name}")\n'
            f'modparam("tls_mgm", "certificate", "[{name}]{pki.server}")\n'
            f'modparam("tls_mgm", "private_key", "[{name}]{pki.server}")\n')


# --- [dom]value and the domain table ----------------------------------------------------------------

def test_split_domain_value() -> None:
    assert split_domain_value("certificate", "[dom1]/etc/c.pem") == ("dom1", "/etc/c.pem")
    assert split_domain_value("verify_cert", " [d] 0") == ("d", "0")
    assert split_domain_value("certificate", "/etc/c.pem") == ("default", "/etc/c.pem")
    with pytest.raises(DomainError, match="empty TLS domain name"):
        split_domain_value("certificate", "[]/etc/c.pem")
    with pytest.raises(DomainError, match=r"no value after \[d\]"):
        split_domain_value("certificate", "[d]")


@pytest.mark.parametrize(("text", "low", "high"), [
    ("SSLv23", None, None), ("TLSv1_2", "TLSv1_2", "TLSv1_2"), ("tlsv1_3", "TLSv1_3", "TLSv1_3"),
    ("TLSv1_2-", "TLSv1_2", None), ("-TLSv1_2", None, "TLSv1_2"), ("TLSv1-TLSv1_3", "TLSv1", "TLSv1_3"),
    ("-", None, None)])
def test_tls_method_names_and_ranges(text: str, low: str | None, high: str | None) -> None:
    method = parse_method(text)
    assert (method.low, method.high) == (low, high)


@pytest.mark.parametrize("text", ["SSLv3", "TLSv2", "SSLv23-TLSv1_3", "x-"])
def test_tls_method_refused(text: str) -> None:
    with pytest.raises(DomainError, match="tls_method"):
        parse_method(text)


def test_server_domains_match_by_address_then_sni() -> None:
    table = build_table(["atlanta", "biloxi", "generic"], ["gw"], {
        "match_ip_address": ["[atlanta]10.0.0.10:5061", "[biloxi]10.0.0.10:5061", "[generic]*",
                             "[gw]1.2.3.4:6677"],
        "match_sip_domain": ["[atlanta]atlanta.com, *.atlanta.com", "[biloxi]biloxi.com", "[generic]none"]})
    match = table.match_server
    assert match("10.0.0.10", 5061, "atlanta.com").name == "atlanta"          # type: ignore[union-attr]
    assert match("10.0.0.10", 5061, "pbx.atlanta.com").name == "atlanta"      # type: ignore[union-attr]
    assert match("10.0.0.10", 5061, "BILOXI.com").name == "biloxi"            # type: ignore[union-attr]
    assert match("10.0.0.10", 5061, None).name == "generic"                   # type: ignore[union-attr]
    assert match("10.0.0.10", 5061, "unknown.org") is None                    # SNI matching nothing: refused
    assert match("10.0.0.99", 5061, "atlanta.com") is None                    # not its address
    # no client domain matches 5.6.7.8: the implicit default is there only without any client domain
    assert table.match_client("1.2.3.4", 6677).name == "gw"                   # type: ignore[union-attr]
    assert table.match_client("5.6.7.8", 5061) is None


def test_the_exact_name_beats_a_wildcard_and_a_named_domain_beats_the_default() -> None:
    table = build_table(["wide", "narrow"], [], {
        "match_sip_domain": ["[wide]*.bar.com", "[narrow]foo.bar.com"], "certificate": ["/c.pem"]})
    assert table.match_server("127.0.0.1", 5061, "foo.bar.com").name == "narrow"  # type: ignore[union-attr]
    assert table.match_server("127.0.0.1", 5061, "x.bar.com").name == "wide"      # type: ignore[union-attr]
    # un-prefixed values made the implicit "default" domain (server and client), matching anything last
    assert table.match_server("127.0.0.1", 5061, "other.org").name == "default"   # type: ignore[union-attr]
    assert [d.name for d in table.client] == ["default"] and table.client[0].certificate == "/c.pem"


@pytest.mark.parametrize(("settings", "why"), [
    ({"certificate": ["[nope]/c.pem"]}, r"TLS domain \[nope\] is not defined"),
    ({"verify_cert": ["[srv]yes"]}, "expects 0 or 1"),
    ({"match_ip_address": ["[srv]10.0.0.1"]}, "is not ip:port"),
    ({"tls_method": ["[srv]SSLv2"]}, "unknown method")])
def test_bad_domain_settings(settings: dict[str, list[str]], why: str) -> None:
    with pytest.raises(DomainError, match=why):
        build_table(["srv"], [], settings)


def test_a_domain_defined_twice_is_refused() -> None:
    with pytest.raises(DomainError, match="already defined"):
        build_table(["a", "a"], [], {})


# --- loading a script ------------------------------------------------------------------------------

def test_a_tls_script_loads_with_domains_and_is_peer_verified(tmp_path: Path, pki: TestPki) -> None:
    server = load(tmp_path, server_domain(pki) + f'modparam("tls_mgm", "ca_list", "[srv]{pki.ca}")\n'
                  'modparam("tls_mgm", "require_cert", "[srv]0")\n'
                  'modparam("proto_tls", "tls_handshake_timeout", 300)\n'
                  'route {\n  if (is_peer_verified()) xlog("$tls_peer_subject_cn $tls_version\\n");\n'
                  '  sl_send_reply(200, "OK");\n}\n')
    tls_mgm = server.modules.get("tls_mgm")
    assert tls_mgm is not None and [d.name for d in tls_mgm.table.server] == ["srv"]  # type: ignore[attr-defined]
    provider = server.modules.get("proto_tls").tls_transport()  # type: ignore[union-attr]
    assert provider.handshake_timeout == pytest.approx(0.3)


def test_socket_tls_needs_proto_tls(tmp_path: Path) -> None:
    found = errors(tmp_path, "route { exit; }\n",
                   head='socket = tls:127.0.0.1:5071\nloadmodule "tls_mgm.so"\n')
    assert len(found) == 1 and ":1:" in found[0] and 'needs loadmodule "proto_tls.so"' in found[0]


def test_socket_tls_default_port_is_5061(tmp_path: Path, pki: TestPki) -> None:
    server = load(tmp_path, server_domain(pki) + "route { exit; }\n",
                  head=HEAD.replace("tls:127.0.0.1:5071", "tls:127.0.0.1"))
    assert [s.name for s in server.config.listen_specs()] == ["udp:127.0.0.1:5070", "tls:127.0.0.1:5061"]


def test_tls_with_worker_processes_loads(tmp_path: Path, pki: TestPki) -> None:
    """A TLS connection lives in the worker that accepted it, as a TCP one (docs/workers.md 4)."""
    server = load(tmp_path, server_domain(pki) + "route { exit; }\n", head="udp_workers = 2\n" + HEAD)
    assert server.config.worker_plan().total == 2


def test_proto_tls_needs_tls_mgm(tmp_path: Path) -> None:
    found = errors(tmp_path, "route { exit; }\n", head='loadmodule "proto_tls.so"\n')
    assert any("depends on module 'tls_mgm'" in e for e in found)


@pytest.mark.parametrize(("line", "why"), [
    ('modparam("tls_mgm", "certificate", "[srv]/no/such/cert.pem")', "no such file"),
    ('modparam("tls_mgm", "ciphers_list", "[srv]NO-SUCH-CIPHER")', "ciphers_list"),
    ('modparam("tls_mgm", "ca_dir", "[srv]/no/such/dir")', "is not a directory"),
    ('modparam("tls_mgm", "crl_check_all", "[srv]1")', "crl_check_all needs crl_dir"),
    ('modparam("tls_mgm", "db_url", "mysql://x")', "not implemented"),
    ('modparam("tls_mgm", "client_sip_domain_avp", "d")', "matched by address only"),
    ('modparam("tls_mgm", "tls_library", "wolfssl")', "Python's ssl"),
    ('modparam("proto_tls", "tls_port", 5062)', "5061"),
    ('modparam("proto_tls", "trace_on", 1)', "tracing"),
    ('modparam("proto_tls", "tls_handshake_timeout", 0)', "positive"),
])
def test_settings_we_cannot_use_are_load_errors(tmp_path: Path, pki: TestPki, line: str, why: str) -> None:
    found = errors(tmp_path, server_domain(pki) + line + "\nroute { exit; }\n")
    assert any(why in e for e in found), found


def test_a_server_domain_without_certificate_is_refused(tmp_path: Path) -> None:
    found = errors(tmp_path, 'modparam("tls_mgm", "server_domain", "srv")\nroute { exit; }\n')
    assert any("needs a certificate and a private_key" in e for e in found), found


def test_tls_pvar_names_are_known_and_others_refused(tmp_path: Path, pki: TestPki) -> None:
    names = ["tls_version", "tls_description", "tls_cipher_info", "tls_cipher_bits", "tls_peer_subject",
             "tls_peer_subject_cn", "tls_peer_issuer_organization", "tls_my_subject_unit",
             "tls_peer_san_email", "tls_peer_san_hostname", "tls_peer_san_uri", "tls_peer_san_ip",
             "tls_my_san_ip", "tls_peer_verified", "tls_peer_revoked", "tls_peer_expired",
             "tls_peer_selfsigned", "tls_peer_notBefore", "tls_peer_notAfter", "tls_peer_serial",
             "tls_my_version", "tls_peer_subject_serial"]
    uses = "".join(f'  xlog("${n}\\n");\n' for n in names)
    load(tmp_path, server_domain(pki) + "route {\n" + uses + "}\n")
    found = errors(tmp_path, server_domain(pki) + 'route {\n  xlog("$tls_peer_issuer_serial\\n");\n}\n')
    assert found and "tls_peer_issuer_serial" in found[0]


# --- proto_wss: wss sockets with tls_mgm's domains ----------------------------------------------------

WSS_HEAD = ('socket = udp:127.0.0.1:5070\nsocket = wss:127.0.0.1:8443\n'
            'loadmodule "tls_mgm.so"\nloadmodule "proto_wss.so"\nloadmodule "sl.so"\n')


def test_proto_wss_parameters_reach_the_transport(tmp_path: Path, pki: TestPki) -> None:
    server = load(tmp_path, server_domain(pki) + 'modparam("proto_wss", "wss_tls_handshake_timeout", 300)\n'
                  'modparam("proto_wss", "wss_handshake_timeout", 250)\n'
                  'modparam("proto_wss", "allowed_origins", "https://a.example")\n'
                  'modparam("proto_wss", "require_origin", 0)\nroute { exit; }\n', head=WSS_HEAD)
    wss = server.modules.get("proto_wss")
    assert wss is not None
    options = wss.wss_options()  # type: ignore[attr-defined]
    assert options["tls_handshake_timeout"] == pytest.approx(0.3)
    assert options["handshake_timeout"] == pytest.approx(0.25)
    assert options["allowed_origins"] == ("https://a.example",) and options["require_origin"] is False
    provider = wss.tls_transport()  # type: ignore[attr-defined]
    assert provider.handshake_timeout == pytest.approx(0.3)


def test_socket_wss_needs_proto_wss(tmp_path: Path) -> None:
    found = errors(tmp_path, "route { exit; }\n",
                   head='socket = wss:127.0.0.1:8443\nloadmodule "tls_mgm.so"\n')
    assert len(found) == 1 and ":1:" in found[0] and 'needs loadmodule "proto_wss.so"' in found[0]


def test_proto_wss_needs_tls_mgm(tmp_path: Path) -> None:
    found = errors(tmp_path, "route { exit; }\n", head='loadmodule "proto_wss.so"\n')
    assert any("depends on module 'tls_mgm'" in e for e in found)


def test_socket_wss_default_port_is_443(tmp_path: Path, pki: TestPki) -> None:
    server = load(tmp_path, server_domain(pki) + "route { exit; }\n",
                  head=WSS_HEAD.replace("wss:127.0.0.1:8443", "wss:127.0.0.1"))
    assert [s.name for s in server.config.listen_specs()] == ["udp:127.0.0.1:5070", "wss:127.0.0.1:443"]


@pytest.mark.parametrize(("param", "value", "says"), [
    ("wss_port", "8443", "write the port on the socket line"),
    ("wss_resource", '"/sip"', "never opens one"),
    ("cert_check_on_conn_reusage", "1", "0 only"),
    ("trace_on", "1", "no tracing"),
    ("wss_max_msg_chunks", "0", "at least 1"),
    ("wss_tls_handshake_timeout", "0", "positive"),
    ("allowed_origins", '"https://a.example/path"', "is not an origin"),
])
def test_proto_wss_refused_parameters(tmp_path: Path, pki: TestPki, param: str, value: str,
                                      says: str) -> None:
    line = f'modparam("proto_wss", "{param}", {value})\n'
    found = errors(tmp_path, server_domain(pki) + line + "route { exit; }\n", head=WSS_HEAD)
    assert any(says in e for e in found), found
