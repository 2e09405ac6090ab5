"""What the $tls_peer_* / $tls_my_* pseudo-variables read of a certificate, decoded by `cryptography`
(the standard library's ssl gives a decoded certificate only when it verified it).

Formats follow OpenSIPS's tls_select.c: the subject and issuer as OpenSSL's X509_NAME_oneline
("/C=AT/ST=Vienna/O=enum.at/CN=enum.at"); the version as X509_get_version (2 for an X.509 v3 certificate);
notBefore/notAfter as ASN1_TIME_print ("Jan  2 03:04:05 2026 GMT"); the serial number as an integer.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

# $tls_*_<part>_<component> -> the attribute of the name it reads (tls_select.c: VAR_COMP_*)
COMPONENTS = {"cn": NameOID.COMMON_NAME, "locality": NameOID.LOCALITY_NAME, "country": NameOID.COUNTRY_NAME,
              "state": NameOID.STATE_OR_PROVINCE_NAME, "organization": NameOID.ORGANIZATION_NAME,
              "unit": NameOID.ORGANIZATIONAL_UNIT_NAME, "serial": NameOID.SERIAL_NUMBER}

# X509_NAME_oneline's short names
_SHORT = {NameOID.COUNTRY_NAME: "C", NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.LOCALITY_NAME: "L",
          NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.COMMON_NAME: "CN",
          NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.SERIAL_NUMBER: "serialNumber",
          NameOID.DOMAIN_COMPONENT: "DC", NameOID.USER_ID: "UID"}

# $tls_*_san_<kind> -> the GeneralName type it reads
SAN_KINDS: dict[str, type[x509.GeneralName]] = {
    "email": x509.RFC822Name, "hostname": x509.DNSName, "uri": x509.UniformResourceIdentifier,
    "ip": x509.IPAddress}


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One certificate, decoded once (cert_info caches by its DER bytes)."""

    cert: x509.Certificate

    @property
    def version(self) -> int:
        return self.cert.version.value

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def name(self, part: str) -> x509.Name:
        return self.cert.subject if part == "subject" else self.cert.issuer

    def oneline(self, part: str) -> str:
        return "".join(f"/{_SHORT.get(a.oid, a.oid.dotted_string)}={a.value!s}" for a in self.name(part))

    def component(self, part: str, component: str) -> str | None:
        """The first value of that attribute (OpenSIPS returns the first), None when absent."""
        values = self.name(part).get_attributes_for_oid(COMPONENTS[component])
        return str(values[0].value) if values else None

    def san(self, kind: str) -> str | None:
        """The first subjectAltName entry of that kind (OpenSIPS returns the first), None when absent."""
        try:
            ext = self.cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        except x509.ExtensionNotFound:
            return None
        values = ext.value.get_values_for_type(SAN_KINDS[kind])  # type: ignore[attr-defined]
        return str(values[0]) if values else None

    @property
    def not_before(self) -> str:
        return _asn1_time(self.cert.not_valid_before_utc)

    @property
    def not_after(self) -> str:
        return _asn1_time(self.cert.not_valid_after_utc)

    def expired(self, now: _dt.datetime) -> bool:
        return now > self.cert.not_valid_after_utc

    @property
    def self_signed(self) -> bool:
        return self.cert.subject == self.cert.issuer


def _asn1_time(when: _dt.datetime) -> str:
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"


@lru_cache(maxsize=256)
def cert_info(der: bytes) -> CertInfo:
    """The decoded certificate (ValueError for bytes that are no certificate)."""
    return CertInfo(x509.load_der_x509_certificate(der))


def pem_file_info(path: str) -> CertInfo | None:
    """The first certificate of a PEM file (our certificate for $tls_my_*), None when unreadable."""
    try:
        with open(path, "rb") as f:
            return CertInfo(x509.load_pem_x509_certificate(f.read()))
    except (OSError, ValueError):
        return None
