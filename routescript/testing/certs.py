"""Test certificates for TLS tests, made by `trustme` (the test extra): a CA, a server certificate for
127.0.0.1 / localhost, client certificates (valid, expired, from an untrusted CA), written as PEM files
for tls_mgm's modparams, and client-side SSL contexts for SipTestClient.

    pki = TestPki.make(tmp_path)
    modparam("tls_mgm", "certificate", f"[srv]{pki.server}")   # certificate and key in one PEM
    client = await SipTestClient.start("tls", addr, tls_context=pki.client_context(pki.client))
"""

from __future__ import annotations

import datetime as _dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True, slots=True)
class TestPki:
    """PEM files: `ca` (trusted CA), `server` (127.0.0.1, ::1, localhost, sip.test; key included),
    `client` (CN alice, SAN email alice@sip.test and DNS alice.sip.test), `expired` (a client certificate
    of the same CA that expired yesterday), `rogue` (a client certificate of an untrusted CA)."""

    __test__ = False   # not a pytest test class

    dir: Path
    ca: Path
    server: Path
    client: Path
    expired: Path
    rogue: Path

    @classmethod
    def make(cls, directory: Path) -> TestPki:
        ca = trustme.CA(organization_name="routescript test CA")
        rogue_ca = trustme.CA(organization_name="someone else")
        yesterday = _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)
        files: dict[str, trustme.Blob | trustme.LeafCert] = {
            "ca": ca.cert_pem,
            "server": ca.issue_cert("127.0.0.1", "::1", "localhost", "sip.test", common_name="sip.test"),
            "client": ca.issue_cert("alice@sip.test", "alice.sip.test", common_name="alice",
                                    organization_name="Example", organization_unit_name="phones"),
            "expired": ca.issue_cert("bob@sip.test", common_name="bob",
                                     not_before=yesterday - _dt.timedelta(days=30), not_after=yesterday),
            "rogue": rogue_ca.issue_cert("mallory@sip.test", common_name="mallory"),
        }
        paths: dict[str, Path] = {}
        for name, item in files.items():
            path = directory / f"{name}.pem"
            if isinstance(item, trustme.LeafCert):
                item.private_key_and_cert_chain_pem.write_to_path(str(path))
            else:
                item.write_to_path(str(path))
            paths[name] = path
        return cls(directory, **paths)

    def client_context(self, cert: Path | None = None, *, trust: Path | None = None) -> ssl.SSLContext:
        """A client-side context trusting `trust` (default: our CA), presenting `cert` when given. The
        name is not checked (the tests connect to 127.0.0.1), the chain is."""
        ctx = ssl.create_default_context(cafile=str(trust or self.ca))
        ctx.check_hostname = False
        if cert is not None:
            ctx.load_cert_chain(str(cert))
        return ctx
