"""pres-rules (RFC 5025 on RFC 4745): parsing, evaluation, the status mapping, transformations of PIDF."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from routescript.modules.presence_xml.rules import (AuthDecision, RulesError, RuleSet, SubHandling,
                                                    apply_auth_nbody, apply_transformations, auth_hooks,
                                                    evaluate, get_auth_status, parse_rules,
                                                    subscription_status)

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pres-rules.xml"

T2020 = 1577836800.0  # 2020-01-01T00:00:00Z
T2021 = 1609459200.0


def rule(rid, conditions="", action=None, transformations=""):
    acts = f"<cr:actions><sub-handling>{action}</sub-handling></cr:actions>" if action else ""
    trans = f"<cr:transformations>{transformations}</cr:transformations>" if transformations else ""
    return f'<cr:rule id="{rid}"><cr:conditions>{conditions}</cr:conditions>{acts}{trans}</cr:rule>'


def ruleset(*rules):
    return (f'<?xml version="1.0"?><cr:ruleset xmlns="{PR}" xmlns:cr="{CP}">{"".join(rules)}'
            f"</cr:ruleset>").encode()


def one(uri):
    return f'<cr:identity><cr:one id="{uri}"/></cr:identity>'


def many(domain=None, *excepts):
    dom = f' domain="{domain}"' if domain is not None else ""
    exc = "".join(f"<cr:except {e}/>" for e in excepts)
    return f"<cr:identity><cr:many{dom}>{exc}</cr:many></cr:identity>"


ALICE = "sip:alice@example.com"

# (rules, watcher, keyword arguments, expected action or None)
CASES = [
    pytest.param([rule("r", one(ALICE), "allow")], ALICE, {}, SubHandling.ALLOW, id="allow-by-identity"),
    pytest.param([rule("r", one(ALICE), "allow")], "sip:mallory@example.com", {}, None, id="other-identity"),
    pytest.param([rule("r", one("sip:Alice@EXAMPLE.com"), "allow")], ALICE, {}, None,
                 id="user-is-case-sensitive"),
    pytest.param([rule("r", one("sip:alice@EXAMPLE.COM:5060"), "allow")], ALICE, {}, SubHandling.ALLOW,
                 id="host-case-and-port-ignored"),
    pytest.param([rule("r", many("example.com"), "block")], "sip:bob@Example.com", {}, SubHandling.BLOCK,
                 id="block-by-domain"),
    pytest.param([rule("r", many("example.com", 'id="sip:bob@example.com"'), "block")], "sip:bob@example.com",
                 {}, None, id="block-by-domain-except-id"),
    pytest.param([rule("r", many("example.com", 'id="sip:bob@example.com"'), "block")], "sip:eve@example.com",
                 {}, SubHandling.BLOCK, id="except-does-not-cover-others"),
    pytest.param([rule("r", many(None, 'domain="example.net"'), "allow")], "sip:x@example.net", {}, None,
                 id="any-identity-except-domain"),
    pytest.param([rule("r", many(None, 'domain="example.net"'), "allow")], "sip:x@example.org", {},
                 SubHandling.ALLOW, id="any-identity"),
    pytest.param([rule("r", one(ALICE), "polite-block")], ALICE, {}, SubHandling.POLITE_BLOCK,
                 id="polite-block"),
    pytest.param([rule("r", one(ALICE), "confirm")], ALICE, {}, SubHandling.CONFIRM, id="confirm"),
    pytest.param([rule("r", "", "allow")], "sip:anyone@anywhere", {}, SubHandling.ALLOW, id="no-conditions"),
    pytest.param([], ALICE, {}, None, id="empty-ruleset"),
    pytest.param([rule("r", one(ALICE))], ALICE, {}, None, id="match-without-sub-handling"),
    pytest.param([rule("r", one(ALICE) + '<cr:sphere value="work home"/>', "allow")], ALICE,
                 {"sphere": "Home"}, SubHandling.ALLOW, id="sphere-matches"),
    pytest.param([rule("r", one(ALICE) + '<cr:sphere value="work"/>', "allow")], ALICE,
                 {"sphere": "home"}, None, id="sphere-differs"),
    pytest.param([rule("r", one(ALICE) + '<cr:sphere value="work"/>', "allow")], ALICE, {}, None,
                 id="sphere-unknown"),
    pytest.param([rule("r", "<cr:validity><cr:from>2020-01-01T00:00:00Z</cr:from>"
                            "<cr:until>2021-01-01T00:00:00+00:00</cr:until></cr:validity>", "allow")],
                 ALICE, {"now": T2020 + 10}, SubHandling.ALLOW, id="validity-inside"),
    pytest.param([rule("r", "<cr:validity><cr:from>2020-01-01T00:00:00Z</cr:from>"
                            "<cr:until>2021-01-01T00:00:00Z</cr:until></cr:validity>", "allow")],
                 ALICE, {"now": T2021}, None, id="validity-after"),
    pytest.param([rule("r", "<cr:validity><cr:from>2020-01-01T01:00:00+01:00</cr:from>"
                            "<cr:until>2020-01-01T02:00:00+01:00</cr:until></cr:validity>", "allow")],
                 ALICE, {"now": T2020 + 1800}, SubHandling.ALLOW, id="validity-time-zone"),
    pytest.param([rule("r", "<cr:validity><cr:from>2020-01-01T00:00:00Z</cr:from>"
                            "<cr:until>2021-01-01T00:00:00Z</cr:until></cr:validity>", "allow")],
                 ALICE, {}, None, id="validity-without-now"),
    pytest.param([rule("a", many("example.com"), "block"), rule("b", one(ALICE), "allow")], ALICE, {},
                 SubHandling.ALLOW, id="conflict-allow-beats-block"),
    pytest.param([rule("a", one(ALICE), "polite-block"), rule("b", many("example.com"), "confirm")],
                 ALICE, {}, SubHandling.POLITE_BLOCK, id="conflict-polite-block-beats-confirm"),
    pytest.param([rule("a", one(ALICE), "confirm"), rule("b", "", "block")], ALICE, {}, SubHandling.CONFIRM,
                 id="conflict-confirm-beats-block"),
    pytest.param([rule("r", one(ALICE) + '<x:geo xmlns:x="urn:example:ext"/>', "allow")], ALICE, {}, None,
                 id="unknown-condition-never-applies"),
]


@pytest.mark.parametrize("rules, watcher, kwargs, expected", CASES)
def test_rules_evaluation(rules, watcher, kwargs, expected):
    assert evaluate(parse_rules(ruleset(*rules)), watcher, **kwargs).action == expected


def test_matched_rules_are_reported_in_document_order():
    rs = parse_rules(ruleset(rule("a", many("example.com"), "block"), rule("b", one("sip:z@z")),
                             rule("c", one(ALICE), "allow")))
    decision = evaluate(rs, ALICE)
    assert decision == AuthDecision(SubHandling.ALLOW, decision.transformations, ("a", "c"))


@pytest.mark.parametrize("action, expected", [
    (None, (2, None)), (SubHandling.CONFIRM, (2, None)), (SubHandling.ALLOW, (1, None)),
    (SubHandling.POLITE_BLOCK, (1, None)), (SubHandling.BLOCK, (3, "rejected")),
])
def test_subscription_status_mapping(action, expected):
    assert subscription_status(action) == expected


def test_sub_handling_order_and_text():
    assert SubHandling.BLOCK < SubHandling.CONFIRM < SubHandling.POLITE_BLOCK < SubHandling.ALLOW
    assert [int(s) for s in SubHandling] == [0, 1, 2, 3]
    assert SubHandling.from_text(" Polite-Block ") is SubHandling.POLITE_BLOCK
    assert SubHandling.POLITE_BLOCK.text == "polite-block"


@pytest.mark.parametrize("document", [
    b"<nope",
    b'<ruleset xmlns="urn:example:other"/>',
    ruleset(rule("r", one(ALICE), "maybe")),
    ruleset(rule("r", "<cr:validity><cr:from>yesterday</cr:from><cr:until>2021-01-01T00:00:00Z</cr:until>"
                      "</cr:validity>", "allow")),
    ruleset(rule("r", "<cr:validity><cr:from>2020-01-01T00:00:00Z</cr:from></cr:validity>", "allow")),
    ruleset(*[rule(f"r{i}", "", "allow") for i in range(300)]),
])
def test_unusable_documents(document):
    with pytest.raises(RulesError):
        parse_rules(document)


@settings(max_examples=250, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_rules_error(data):
    try:
        parse_rules(data)
    except RulesError:
        pass


def test_example_document():
    rs = parse_rules(EXAMPLE.read_bytes())
    assert [r.id for r in rs.rules] == ["colleagues", "bob-at-work", "spammer", "no-example-net"]
    assert evaluate(rs, "sip:carol@example.com").action is SubHandling.ALLOW
    assert evaluate(rs, "sip:intern@example.com").action is None
    assert evaluate(rs, "sip:bob@example.org").action is None
    assert evaluate(rs, "sip:bob@example.org", sphere="work").action is SubHandling.ALLOW
    assert evaluate(rs, "sip:spam@example.net").action is SubHandling.POLITE_BLOCK
    assert evaluate(rs, "sip:x@example.net").action is SubHandling.BLOCK


# --- transformations -------------------------------------------------------------------------------------

PIDF = b"""<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:x="urn:example:ext"
          entity="sip:alice@example.com">
  <tuple id="sip-desk"><status><basic>open</basic></status><rpid:class>work</rpid:class>
    <contact>sip:alice@10.0.0.5</contact><note>desk phone</note></tuple>
  <tuple id="sip-mobile"><status><basic>open</basic></status>
    <contact>SIP:alice@mobile.example.com</contact></tuple>
  <tuple id="xmpp"><status><basic>closed</basic></status><contact>xmpp:alice@example.com</contact></tuple>
  <tuple id="mail"><status><basic>open</basic></status><contact>mailto:alice@example.com</contact></tuple>
  <dm:person id="p1"><rpid:activities><rpid:busy/></rpid:activities><rpid:mood><rpid:happy/></rpid:mood>
    <rpid:sphere>work</rpid:sphere><dm:note>in a meeting</dm:note><x:secret>42</x:secret></dm:person>
  <dm:device id="d1"><dm:deviceID>urn:uuid:1</dm:deviceID><rpid:class>desk</rpid:class></dm:device>
  <dm:device id="d2"><dm:deviceID>urn:uuid:2</dm:deviceID></dm:device>
  <note>top-level note</note>
  <x:extra>top-level extension</x:extra>
</presence>"""

NSMAP = {"p": "urn:ietf:params:xml:ns:pidf", "dm": "urn:ietf:params:xml:ns:pidf:data-model",
         "rpid": "urn:ietf:params:xml:ns:pidf:rpid", "x": "urn:example:ext"}


def transformed(transformations):
    rs = parse_rules(ruleset(rule("r", one(ALICE), "allow", transformations)))
    body = apply_transformations(PIDF, evaluate(rs, ALICE).transformations)
    return etree.fromstring(body)


def ids(root, path):
    return [e.get("id") for e in root.findall(path, NSMAP)]


@pytest.mark.parametrize("services, expected", [
    ("<all-services/>", ["sip-desk", "sip-mobile", "xmpp", "mail"]),
    ("<service-uri-scheme>sip</service-uri-scheme>", ["sip-desk", "sip-mobile"]),
    ("<service-uri-scheme>xmpp</service-uri-scheme><service-uri-scheme>mailto</service-uri-scheme>",
     ["xmpp", "mail"]),
    ("<service-uri>xmpp:alice@example.com</service-uri>", ["xmpp"]),
    ("<occurrence-id>mail</occurrence-id>", ["mail"]),
    ("<class>work</class>", ["sip-desk"]),
    ("<service-uri-scheme>tel</service-uri-scheme>", []),
])
def test_provide_services_filters_tuples(services, expected):
    root = transformed(f"<provide-services>{services}</provide-services>")
    assert ids(root, "p:tuple") == expected
    # only services were provided: persons, devices, notes and extensions are not shown
    assert ids(root, "dm:person") == [] and ids(root, "dm:device") == []
    assert root.find("p:note", NSMAP) is None and root.find("x:extra", NSMAP) is None
    assert root.get("entity") == "sip:alice@example.com"


def test_provide_persons_devices_and_attributes():
    root = transformed("<provide-services><all-services/></provide-services>"
                       "<provide-persons><all-persons/></provide-persons>"
                       "<provide-devices><deviceID>urn:uuid:2</deviceID><class>desk</class></provide-devices>"
                       "<provide-activities>true</provide-activities><provide-mood>false</provide-mood>"
                       "<provide-deviceID>true</provide-deviceID>")
    assert ids(root, "dm:person") == ["p1"] and ids(root, "dm:device") == ["d1", "d2"]
    person = root.find("dm:person", NSMAP)
    assert person.find("rpid:activities/rpid:busy", NSMAP) is not None
    for hidden in ("rpid:mood", "rpid:sphere", "dm:note", "x:secret"):
        assert person.find(hidden, NSMAP) is None, hidden
    desk = root.find("p:tuple", NSMAP)
    assert desk.find("p:status/p:basic", NSMAP).text == "open" and desk.find("p:contact", NSMAP) is not None
    assert desk.find("rpid:class", NSMAP) is None and desk.find("p:note", NSMAP) is None
    assert root.find("dm:device/dm:deviceID", NSMAP) is not None


def test_provide_all_attributes_and_notes():
    root = transformed("<provide-persons><occurrence-id>p1</occurrence-id></provide-persons>"
                       "<provide-all-attributes/>")
    assert ids(root, "p:tuple") == [] and ids(root, "dm:person") == ["p1"]
    person = root.find("dm:person", NSMAP)
    assert person.find("rpid:mood", NSMAP) is not None and person.find("x:secret", NSMAP) is not None
    notes = transformed("<provide-services><occurrence-id>sip-desk</occurrence-id></provide-services>"
                        "<provide-note>true</provide-note>"
                        '<provide-unknown-attribute ns="urn:example:ext" name="extra">true'
                        "</provide-unknown-attribute>")
    assert notes.find("p:tuple/p:note", NSMAP).text == "desk phone"
    assert notes.find("p:note", NSMAP).text == "top-level note"
    assert notes.find("x:extra", NSMAP) is not None


def test_transformations_of_conflicting_rules_add_up():
    rs = parse_rules(ruleset(
        rule("a", many("example.com"), "confirm",
             "<provide-services><service-uri-scheme>xmpp</service-uri-scheme></provide-services>"),
        rule("b", one(ALICE), "allow",
             "<provide-services><occurrence-id>mail</occurrence-id></provide-services>")))
    decision = evaluate(rs, ALICE)
    assert decision.action is SubHandling.ALLOW
    body = apply_transformations(PIDF, decision.transformations)
    assert ids(etree.fromstring(body), "p:tuple") == ["xmpp", "mail"]


def test_no_transformations_passes_the_body_unchanged():
    rs = parse_rules(ruleset(rule("r", one(ALICE), "allow")))
    assert apply_transformations(PIDF, evaluate(rs, ALICE).transformations) == PIDF


# --- the hooks -------------------------------------------------------------------------------------------

def watcher(user="alice", domain="example.com", pres_uri="sip:carol@example.com"):
    return SimpleNamespace(watcher_user=user, watcher_domain=domain, pres_uri=pres_uri)


RULES = ruleset(rule("a", one(ALICE), "allow",
                     "<provide-services><occurrence-id>sip-desk</occurrence-id></provide-services>"),
                rule("b", one("sip:spam@example.net"), "polite-block"),
                rule("c", many("example.net"), "block"),
                rule("d", one("sip:ask@example.org"), "confirm"))


@pytest.mark.parametrize("user, domain, expected", [
    ("alice", "example.com", (1, None)), ("spam", "example.net", (1, None)),
    ("x", "example.net", (3, "rejected")), ("ask", "example.org", (2, None)),
    ("nobody", "example.org", (2, None)),
])
def test_get_auth_status(user, domain, expected):
    assert get_auth_status(watcher(user, domain), RULES) == expected
    assert get_auth_status(watcher(user, domain), parse_rules(RULES)) == expected


def test_get_auth_status_without_or_with_broken_rules_is_pending():
    assert get_auth_status(watcher(), None) == (2, None)
    assert get_auth_status(watcher(), b"<broken") == (2, None)


def test_apply_auth_nbody():
    body = apply_auth_nbody(PIDF, watcher(), RULES)
    assert ids(etree.fromstring(body), "p:tuple") == ["sip-desk"]
    assert apply_auth_nbody(PIDF, watcher("spam", "example.net"), RULES) is None    # polite-block: no body
    assert apply_auth_nbody(PIDF, watcher("x", "example.net"), RULES) is None       # block
    assert apply_auth_nbody(PIDF, watcher("nobody", "example.org"), RULES) == PIDF  # no rule: unchanged
    assert apply_auth_nbody(PIDF, watcher(), None) == PIDF
    assert apply_auth_nbody(None, watcher(), RULES) is None
    assert apply_auth_nbody(b"<not-pidf", watcher(), RULES) is None                  # cannot filter: no body


def test_auth_hooks_inject_clock_and_sphere():
    rules = ruleset(rule("r", one(ALICE) + '<cr:sphere value="work"/>'
                              "<cr:validity><cr:from>2020-01-01T00:00:00Z</cr:from>"
                              "<cr:until>2021-01-01T00:00:00Z</cr:until></cr:validity>", "allow"))
    spheres = {"sip:carol@example.com": "work"}
    status, nbody = auth_hooks(clock=lambda: T2020 + 5, sphere_of=spheres.get)
    assert status(watcher(), rules) == (1, None)
    assert nbody(PIDF, watcher(), rules) == PIDF
    late, _ = auth_hooks(clock=lambda: T2021 + 5, sphere_of=spheres.get)
    assert late(watcher(), rules) == (2, None)
    home, _ = auth_hooks(clock=lambda: T2020 + 5, sphere_of=lambda uri: "home")
    assert home(watcher(), rules) == (2, None)


def test_ruleset_is_an_immutable_value():
    rs = parse_rules(RULES)
    assert isinstance(rs, RuleSet) and rs == parse_rules(RULES)
    with pytest.raises(AttributeError):
        rs.rules = ()  # type: ignore[misc]
