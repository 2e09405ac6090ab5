"""The sans-IO parts: save.decide() (RFC 3261 10.3) over a fake clock, and the usrloc Domain (expiry)."""

from __future__ import annotations

import pytest

from routescript.modules.registrar.save import (
    RegContact,
    RegisterFacts,
    RegisterRefused,
    SaveSettings,
    decide,
    methods_mask,
    parse_q,
)
from routescript.modules.usrloc.core import MAX_EXPIRES_ABS, Contact, Domain, best_first

NOW = 1_700_000_000
S = SaveSettings()


def facts(*contacts: RegContact, callid: str = "c1", cseq: int = 1, expires: int | None = None,
          star: bool = False) -> RegisterFacts:
    return RegisterFacts(aor="bob", username="bob", domain=None, callid=callid, cseq=cseq, star=star,
                         contacts=contacts, expires_header=expires)


def rc(uri: str, expires: int | None = None, q: float | None = None) -> RegContact:
    return RegContact(uri, expires, q)


def apply(dom: Domain, result: object) -> None:
    for change in result.changes:  # type: ignore[attr-defined]
        dom.apply(change)


def test_add_refresh_and_remove_with_expires_zero() -> None:
    dom = Domain("location")
    r = decide(facts(rc("sip:bob@10.0.0.1"), expires=300), [], S, NOW, "location")
    apply(dom, r)
    [c] = dom.live("bob", NOW)
    assert c.expires == NOW + 300 and c.callid == "c1" and c.cseq == 1 and c.q == -1.0
    # refresh: same Call-ID, higher CSeq -> same contact_id, new expiry
    r = decide(facts(rc("sip:bob@10.0.0.1"), cseq=2, expires=600), dom.live("bob", NOW + 10), S, NOW + 10,
               "location")
    apply(dom, r)
    [c2] = dom.live("bob", NOW + 10)
    assert c2.contact_id == c.contact_id and c2.expires == NOW + 610 and c2.cseq == 2
    # Expires: 0 removes it
    r = decide(facts(rc("sip:bob@10.0.0.1"), cseq=3, expires=0), dom.live("bob", NOW + 20), S, NOW + 20,
               "location")
    apply(dom, r)
    assert dom.live("bob", NOW + 20) == [] and r.bindings == []


def test_star_needs_expires_zero_and_removes_all() -> None:
    dom = Domain("location")
    apply(dom, decide(facts(rc("sip:a@h1"), rc("sip:b@h2", q=0.5)), [], S, NOW, "location"))
    assert len(dom.live("bob", NOW)) == 2
    with pytest.raises(RegisterRefused) as err:
        decide(facts(star=True, expires=60, cseq=2), dom.live("bob", NOW), S, NOW, "location")
    assert err.value.code == 400
    r = decide(facts(star=True, expires=0, cseq=2), dom.live("bob", NOW), S, NOW, "location")
    apply(dom, r)
    assert dom.live("bob", NOW) == []


def test_star_keeps_a_binding_of_the_same_call_with_an_older_cseq() -> None:
    dom = Domain("location")
    apply(dom, decide(facts(rc("sip:a@h1"), cseq=5), [], S, NOW, "location"))
    r = decide(facts(star=True, expires=0, cseq=4), dom.live("bob", NOW), S, NOW, "location")
    assert r.changes == [] and len(r.bindings) == 1


def test_423_below_min_expires_and_max_expires_lowers() -> None:
    with pytest.raises(RegisterRefused) as err:
        decide(facts(rc("sip:a@h", expires=10)), [], S, NOW, "location")
    assert err.value.code == 423 and ("Min-Expires", "60") in err.value.headers
    s = SaveSettings(max_expires=120)
    r = decide(facts(rc("sip:a@h"), expires=99999), [], s, NOW, "location")
    assert r.bindings[0].expires == NOW + 120


def test_absurd_expires_is_capped_to_the_column() -> None:
    r = decide(facts(rc("sip:a@h"), expires=2**32 - 1), [], S, NOW, "location")
    assert r.bindings[0].expires == MAX_EXPIRES_ABS


def test_cseq_rules_of_one_call() -> None:
    dom = Domain("location")
    apply(dom, decide(facts(rc("sip:a@h"), cseq=5), [], S, NOW, "location"))
    with pytest.raises(RegisterRefused) as err:
        decide(facts(rc("sip:a@h"), cseq=4), dom.live("bob", NOW), S, NOW, "location")
    assert err.value.code == 400 and "CSeq" in err.value.reason
    # the same CSeq within cseq_delay: a retransmission, nothing changes
    r = decide(facts(rc("sip:a@h"), cseq=5), dom.live("bob", NOW + 1), S, NOW + 1, "location")
    assert r.retransmission and r.changes == []
    # another Call-ID may update with any CSeq (RFC 3261 10.3 step 7)
    r = decide(facts(rc("sip:a@h"), callid="other", cseq=1), dom.live("bob", NOW), S, NOW, "location")
    assert r.changes[0].contact.callid == "other"


def test_matching_mode_1_keeps_bindings_of_other_calls_apart() -> None:
    dom = Domain("location")
    s = SaveSettings(matching_mode=1)
    apply(dom, decide(facts(rc("sip:a@h"), callid="x"), [], s, NOW, "location"))
    apply(dom, decide(facts(rc("sip:a@h"), callid="y"), dom.live("bob", NOW), s, NOW, "location"))
    assert len(dom.live("bob", NOW)) == 2


def test_max_contacts_503_and_force_registration() -> None:
    dom = Domain("location")
    s = SaveSettings(max_contacts=1)
    apply(dom, decide(facts(rc("sip:a@h1")), [], s, NOW, "location"))
    with pytest.raises(RegisterRefused) as err:
        decide(facts(rc("sip:a@h2"), callid="c2"), dom.live("bob", NOW), s, NOW, "location")
    assert err.value.code == 503
    forced = SaveSettings(max_contacts=1, force=True)
    r = decide(facts(rc("sip:a@h2"), callid="c2"), dom.live("bob", NOW + 5), forced, NOW + 5, "location")
    apply(dom, r)
    assert [c.contact for c in dom.live("bob", NOW + 5)] == ["sip:a@h2"]


@pytest.mark.parametrize("text", ["5", "1.5", "-1", "abc", "0.1234", "1e0", ""])
def test_absurd_q_values_are_refused(text: str) -> None:
    with pytest.raises(RegisterRefused) as err:
        parse_q(text)
    assert err.value.code == 400


def test_q_values_and_methods() -> None:
    assert parse_q("0.5") == 0.5 and parse_q("1.000") == 1.0 and parse_q(None) is None
    assert methods_mask(["INVITE", "MESSAGE"]) == 1 | 256 and methods_mask(None) is None


def test_expiry_on_a_fake_clock_and_best_first() -> None:
    dom = Domain("location")
    apply(dom, decide(facts(rc("sip:a@h1", expires=60, q=0.2), rc("sip:a@h2", expires=120, q=0.9)), [], S,
                      NOW, "location"))
    assert [c.contact for c in best_first(dom.live("bob", NOW))] == ["sip:a@h2", "sip:a@h1"]
    assert len(dom.live("bob", NOW + 61)) == 1          # invisible at once
    gone = dom.expired(NOW + 61)
    assert [g.contact.contact for g in gone] == ["sip:a@h1"]
    for g in gone:
        dom.apply(g)
    assert dom.contact_count() == 1
    for g in dom.expired(NOW + 121):
        dom.apply(g)
    assert dom.records == {}


def test_contact_row_round_trip() -> None:
    c = Contact(contact_id=(5 << 32) | 7, username="bob", domain="example.com", contact="sip:b@h",
                expires=NOW,
                q=0.5, callid="c", cseq=3, cflags=4, user_agent="ua", socket="udp:1.2.3.4:5060", methods=257,
                sip_instance='"<urn:uuid:1>"', kv_store='{"reg-id": 1}', last_modified=NOW, reg_id=1)
    assert Contact.from_row(c.to_row()) == c
    assert Contact.from_wire(c.to_wire()) == c
