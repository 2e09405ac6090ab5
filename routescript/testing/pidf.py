"""A minimal PIDF document (RFC 3863) for PUBLISH bodies in tests."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr


def pidf(entity: str, basic: str = "open", *, note: str | None = None, tuple_id: str = "t1",
         contact: str | None = None) -> bytes:
    """`<presence entity=...>` with one tuple whose status is `basic` ("open"/"closed")."""
    parts = [f"<status><basic>{escape(basic)}</basic></status>"]
    if contact is not None:
        parts.append(f"<contact>{escape(contact)}</contact>")
    if note is not None:
        parts.append(f"<note>{escape(note)}</note>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity={quoteattr(entity)}>'
        f"<tuple id={quoteattr(tuple_id)}>{''.join(parts)}</tuple></presence>\n"
    ).encode()
