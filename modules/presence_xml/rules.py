"""Presence authorization rules: pres-rules (RFC 5025) on the common-policy framework (RFC 4745).

Pure functions: a rules document (bytes) in, a decision out; a PIDF body and a decision in, the body that
watcher may see out. No I/O and no clock - `now` is passed in. The presence_xml glue wires them as the
`presence` package's get_auth_status / apply_auth_nbody hooks (see `auth_hooks`).

RFC 4745 (common-policy), the parts evaluated here:
    <ruleset> contains rule*;  <rule id=ID> contains conditions?, actions?, transformations?
    conditions: identity?, sphere?, validity?  - a rule applies when every condition present is TRUE
      <identity> ( <one id=URI/> | <many domain=D?> <except domain=D?|id=URI?/>* </many> )+
                 TRUE when the watcher's authenticated identity matches any child
      <sphere value="tok tok"/>  TRUE when the presentity's current sphere is one of the tokens
      <validity> (<from>dateTime</from> <until>dateTime</until>)+  TRUE when now is in one interval
    10.2 combining: the actions and transformations of every applicable rule are combined; an
      integer-valued action (sub-handling) takes the highest value, set-valued transformations the union.
RFC 5025 (pres-rules), 3.2.1 sub-handling, ordered (the numeric order is what combining uses):
    block < confirm < polite-block < allow
  3.3 provide-services (all-services | service-uri | service-uri-scheme | occurrence-id | class)*,
      provide-persons (all-persons | occurrence-id | class)*,
      provide-devices (all-devices | deviceID | occurrence-id | class)*,
      provide-all-attributes, provide-<attribute> true|false (activities, class, deviceID, mood, place-is,
      place-type, privacy, relationship, sphere, status-icon, time-offset, user-input, note),
      provide-unknown-attribute name= ns= true|false

Choices (where RFC and OpenSIPS differ, or both are silent):
- OpenSIPS applies only the first rule that matches; we combine every matching rule (RFC 4745 10.2), so
  conflicting rules give the highest sub-handling (a block rule never wins over an allow rule for the same
  watcher - RFC 5025 says to write a more specific rule without the allow instead).
- A rule with a condition we do not know (an extension) never applies (privacy-safe, RFC 4745 section 7:
  an unrecognised condition cannot be judged TRUE). Unknown actions and transformations are ignored.
- A validity condition needs `now`; evaluated without one, such a rule does not apply.
- Matching rules that carry no provide-* transformation at all: the body is passed unchanged (what
  OpenSIPS does, and what the measured `allow` outcome shows). As soon as one provide-* is given, RFC 5025's
  privacy-safe defaults hold: a kind of element (tuples, persons, devices) without its provide-* element is
  removed, and without provide-all-attributes only the attributes explicitly provided are kept.
- Identities compare as SIP URIs do for this purpose: scheme and host case-insensitively, user exactly.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, UTC
from typing import Any

from lxml import etree

from .xml_util import (NS_DATA_MODEL, NS_PIDF, NS_RPID, BodyError, local_name, namespace_of, parse_xml,
                       serialize)

__all__ = [
    "NS_COMMON_POLICY",
    "NS_PRES_RULES",
    "AuthDecision",
    "Identity",
    "Many",
    "Provide",
    "Rule",
    "RuleSet",
    "RulesError",
    "SubHandling",
    "Transformations",
    "apply_auth_nbody",
    "apply_transformations",
    "auth_hooks",
    "evaluate",
    "get_auth_status",
    "parse_rules",
    "subscription_status",
]

log = logging.getLogger(__name__)

NS_COMMON_POLICY = "urn:ietf:params:xml:ns:common-policy"
NS_PRES_RULES = "urn:ietf:params:xml:ns:pres-rules"

MAX_RULES = 256  # bound: rules in one document (the parser also bounds size and element count)

# active_watchers.status values (the presence core's SubState numbers, OpenSIPS's subs status).
ACTIVE_STATUS = 1
PENDING_STATUS = 2
TERMINATED_STATUS = 3


class RulesError(ValueError):
    """A rules document that cannot be used (not XML, not a common-policy ruleset, a bad value)."""


class SubHandling(enum.IntEnum):
    """RFC 5025 3.2.1 sub-handling, in the order combining uses (higher wins)."""

    BLOCK = 0
    CONFIRM = 1
    POLITE_BLOCK = 2
    ALLOW = 3

    @property
    def text(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_text(cls, text: str) -> SubHandling:
        try:
            return cls[text.strip().upper().replace("-", "_")]
        except KeyError:
            raise RulesError(f"unknown sub-handling {text.strip()!r}") from None


# --- the parsed document --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Many:
    """<many domain=D?> with its <except> children; domain None = any authenticated identity."""

    domain: str | None = None
    except_ids: tuple[str, ...] = ()
    except_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Identity:
    """<identity>: TRUE when any <one> or <many> matches."""

    ones: tuple[str, ...] = ()
    many: tuple[Many, ...] = ()


@dataclass(frozen=True, slots=True)
class Provide:
    """One provide-services / provide-persons / provide-devices element (or their union)."""

    all: bool = False
    service_uris: frozenset[str] = frozenset()
    schemes: frozenset[str] = frozenset()
    occurrence_ids: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    device_ids: frozenset[str] = frozenset()

    def union(self, other: Provide | None) -> Provide:
        if other is None:
            return self
        return Provide(self.all or other.all, self.service_uris | other.service_uris,
                       self.schemes | other.schemes, self.occurrence_ids | other.occurrence_ids,
                       self.classes | other.classes, self.device_ids | other.device_ids)


def _union(a: Provide | None, b: Provide | None) -> Provide | None:
    return b if a is None else a.union(b)


@dataclass(frozen=True, slots=True)
class Transformations:
    """The provide-* transformations of a rule (or of several, combined).

    services/persons/devices: None when the element is absent. attributes: names provided with `true`
    (RFC 5025 3.3.x, e.g. "activities", "note"); unknown_attributes: (namespace, name) pairs provided.
    """

    services: Provide | None = None
    persons: Provide | None = None
    devices: Provide | None = None
    all_attributes: bool = False
    attributes: frozenset[str] = frozenset()
    unknown_attributes: frozenset[tuple[str, str]] = frozenset()

    @property
    def empty(self) -> bool:
        return (self.services is None and self.persons is None and self.devices is None
                and not self.all_attributes and not self.attributes and not self.unknown_attributes)

    def union(self, other: Transformations) -> Transformations:
        return Transformations(_union(self.services, other.services), _union(self.persons, other.persons),
                               _union(self.devices, other.devices),
                               self.all_attributes or other.all_attributes,
                               self.attributes | other.attributes,
                               self.unknown_attributes | other.unknown_attributes)


@dataclass(frozen=True, slots=True)
class Rule:
    """One <rule>. A condition that is None is absent (TRUE)."""

    id: str
    identity: Identity | None = None
    spheres: tuple[str, ...] | None = None
    validity: tuple[tuple[float, float], ...] | None = None
    sub_handling: SubHandling | None = None
    transformations: Transformations = field(default_factory=Transformations)
    unknown_condition: bool = False


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """The combined outcome for one watcher: `action` None when no matching rule gives sub-handling."""

    action: SubHandling | None
    transformations: Transformations = field(default_factory=Transformations)
    matched: tuple[str, ...] = ()


# --- parsing ----------------------------------------------------------------------------------------------

def _cp(local: str) -> str:
    return f"{{{NS_COMMON_POLICY}}}{local}"


def _pr(local: str) -> str:
    return f"{{{NS_PRES_RULES}}}{local}"


_RULESET, _RULE = _cp("ruleset"), _cp("rule")
_CONDITIONS, _ACTIONS, _TRANSFORMATIONS = _cp("conditions"), _cp("actions"), _cp("transformations")
_IDENTITY, _SPHERE, _VALIDITY = _cp("identity"), _cp("sphere"), _cp("validity")
_ONE, _MANY, _EXCEPT, _FROM, _UNTIL = _cp("one"), _cp("many"), _cp("except"), _cp("from"), _cp("until")

# provide-<attribute> names of RFC 5025 3.3.x and the element (namespace, local name) each one governs.
_ATTRIBUTE_ELEMENTS: dict[str, tuple[str, str]] = {
    "activities": (NS_RPID, "activities"), "class": (NS_RPID, "class"),
    "deviceID": (NS_DATA_MODEL, "deviceID"), "mood": (NS_RPID, "mood"), "place-is": (NS_RPID, "place-is"),
    "place-type": (NS_RPID, "place-type"), "privacy": (NS_RPID, "privacy"),
    "relationship": (NS_RPID, "relationship"), "sphere": (NS_RPID, "sphere"),
    "status-icon": (NS_RPID, "status-icon"), "time-offset": (NS_RPID, "time-offset"),
    "user-input": (NS_RPID, "user-input"),
}
_PROVIDE_KINDS = {"provide-services": "services", "provide-persons": "persons", "provide-devices": "devices"}


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


def _timestamp(text: str) -> float:
    """xs:dateTime -> epoch seconds. A value without a zone is read as UTC (our choice)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RulesError(f"bad dateTime {text.strip()!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_identity(element: etree._Element) -> Identity:
    ones: list[str] = []
    many: list[Many] = []
    for child in element:
        if child.tag == _ONE:
            if child.get("id"):
                ones.append(child.get("id", "").strip())
        elif child.tag == _MANY:
            ids = tuple(e.get("id", "").strip() for e in child.iterchildren(_EXCEPT) if e.get("id"))
            domains = tuple(e.get("domain", "").strip().lower() for e in child.iterchildren(_EXCEPT)
                            if e.get("domain"))
            domain = child.get("domain")
            many.append(Many(domain.strip().lower() if domain is not None else None, ids, domains))
    return Identity(tuple(ones), tuple(many))


def _parse_validity(element: etree._Element) -> tuple[tuple[float, float], ...]:
    intervals: list[tuple[float, float]] = []
    start: float | None = None
    for child in element:
        if child.tag == _FROM:
            start = _timestamp(_text(child))
        elif child.tag == _UNTIL:
            if start is None:
                raise RulesError("<until> without <from> in <validity>")
            intervals.append((start, _timestamp(_text(child))))
            start = None
    if start is not None:
        raise RulesError("<from> without <until> in <validity>")
    return tuple(intervals)


def _parse_provide(element: etree._Element) -> Provide:
    all_ = False
    uris: set[str] = set()
    schemes: set[str] = set()
    occurrences: set[str] = set()
    classes: set[str] = set()
    devices: set[str] = set()
    for child in element:
        name = local_name(child)
        if name in ("all-services", "all-persons", "all-devices"):
            all_ = True
        elif name == "service-uri":
            uris.add(_text(child))
        elif name == "service-uri-scheme":
            schemes.add(_text(child).lower())
        elif name == "occurrence-id":
            occurrences.add(_text(child))
        elif name == "class":
            classes.add(_text(child))
        elif name == "deviceID":
            devices.add(_text(child))
    return Provide(all_, frozenset(uris), frozenset(schemes), frozenset(occurrences), frozenset(classes),
                   frozenset(devices))


def _parse_transformations(element: etree._Element) -> Transformations:
    kinds: dict[str, Provide | None] = {"services": None, "persons": None, "devices": None}
    all_attributes = False
    attributes: set[str] = set()
    unknown: set[tuple[str, str]] = set()
    for child in element:
        if namespace_of(child) != NS_PRES_RULES:
            continue  # another extension's transformation: ignored
        name = local_name(child) or ""
        if name in _PROVIDE_KINDS:
            kind = _PROVIDE_KINDS[name]
            kinds[kind] = _union(kinds[kind], _parse_provide(child))
        elif name == "provide-all-attributes":
            all_attributes = True
        elif name == "provide-unknown-attribute":
            if _text(child).lower() != "false" and child.get("name"):
                unknown.add((child.get("ns", ""), child.get("name", "")))
        elif name.startswith("provide-") and _text(child).lower() not in ("false", "0"):
            # provide-user-input takes false | bare | thresholds | full; the others true | false.
            attributes.add(name[len("provide-"):])
    return Transformations(kinds["services"], kinds["persons"], kinds["devices"], all_attributes,
                           frozenset(attributes), frozenset(unknown))


def _parse_rule(element: etree._Element, index: int) -> Rule:
    rule_id = (element.get("id") or f"#{index}").strip()
    identity = spheres = validity = None
    unknown = False
    sub_handling = None
    transformations = Transformations()
    for part in element:
        if part.tag == _CONDITIONS:
            for cond in part:
                if not isinstance(cond.tag, str):
                    continue
                if cond.tag == _IDENTITY:
                    identity = _parse_identity(cond)
                elif cond.tag == _SPHERE:
                    spheres = tuple(t.lower() for t in (cond.get("value") or "").split())
                elif cond.tag == _VALIDITY:
                    validity = _parse_validity(cond)
                else:
                    unknown = True
        elif part.tag == _ACTIONS:
            for action in part:
                if action.tag == _pr("sub-handling"):
                    sub_handling = SubHandling.from_text(_text(action))
        elif part.tag == _TRANSFORMATIONS:
            transformations = _parse_transformations(part)
    return Rule(rule_id, identity, spheres, validity, sub_handling, transformations, unknown)


def parse_rules(document: bytes) -> RuleSet:
    """Parse a pres-rules document (bounded and XXE-safe, through xml_util.parse_xml). Raises RulesError."""
    try:
        root = parse_xml(bytes(document))
    except BodyError as exc:
        raise RulesError(str(exc)) from None
    if root.tag != _RULESET:
        raise RulesError(f"root element is not <ruleset> in {NS_COMMON_POLICY}")
    rules = []
    for index, element in enumerate(root.iterchildren(_RULE)):
        if index >= MAX_RULES:
            raise RulesError(f"more than {MAX_RULES} rules")
        rules.append(_parse_rule(element, index))
    return RuleSet(tuple(rules))


# --- evaluation -------------------------------------------------------------------------------------------

def _split_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, user, host) of "scheme:user@host;params", scheme and host lower-cased."""
    text = uri.strip().strip("<>")
    scheme, colon, rest = text.partition(":")
    if not colon:
        scheme, rest = "sip", text
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user, at, host = rest.rpartition("@")
    if not at:
        user, host = "", rest
    host = host.lower()
    # a port is not part of an identity
    if host.startswith("[") and "]:" in host:
        host = host[: host.index("]") + 1]
    elif not host.startswith("[") and host.count(":") == 1:
        host = host.split(":", 1)[0]
    return scheme.lower(), user, host


def _same_identity(a: str, b: str) -> bool:
    return _split_uri(a) == _split_uri(b)


def _identity_matches(identity: Identity, watcher_uri: str) -> bool:
    if any(_same_identity(one, watcher_uri) for one in identity.ones):
        return True
    domain = _split_uri(watcher_uri)[2]
    for many in identity.many:
        if many.domain is not None and many.domain != domain:
            continue
        if any(_same_identity(e, watcher_uri) for e in many.except_ids):
            continue
        if domain in many.except_domains:
            continue
        return True
    return False


def _rule_applies(rule: Rule, watcher_uri: str, sphere: str | None, now: float | None) -> bool:
    if rule.unknown_condition:
        return False
    if rule.identity is not None and not _identity_matches(rule.identity, watcher_uri):
        return False
    if rule.spheres is not None and (sphere is None or sphere.strip().lower() not in rule.spheres):
        return False
    if rule.validity is None:
        return True
    return now is not None and any(start <= now < until for start, until in rule.validity)


def evaluate(rules: RuleSet, watcher_uri: str, *, sphere: str | None = None,
             now: float | None = None) -> AuthDecision:
    """Combine every rule that applies to `watcher_uri` ("sip:user@domain"): the highest sub-handling
    (None when no applying rule has one, or none applies) and the union of their transformations.
    `sphere`: the presentity's current RPID sphere (None = unknown: sphere conditions are FALSE).
    `now`: epoch seconds for validity conditions."""
    action: SubHandling | None = None
    transformations = Transformations()
    matched: list[str] = []
    for rule in rules.rules:
        if not _rule_applies(rule, watcher_uri, sphere, now):
            continue
        matched.append(rule.id)
        if rule.sub_handling is not None and (action is None or rule.sub_handling > action):
            action = rule.sub_handling
        transformations = transformations.union(rule.transformations)
    return AuthDecision(action, transformations, tuple(matched))


def subscription_status(action: SubHandling | None) -> tuple[int, str | None]:
    """(active_watchers status, reason) for a decision (OPENSIPS-BEHAVIOUR, measured):
    no rule or confirm -> pending; allow -> active; polite-block -> active (with no body, see
    apply_auth_nbody); block -> terminated;reason=rejected."""
    if action is None or action is SubHandling.CONFIRM:
        return PENDING_STATUS, None
    if action is SubHandling.BLOCK:
        return TERMINATED_STATUS, "rejected"
    return ACTIVE_STATUS, None


# --- transformations on a PIDF body ---------------------------------------------------------------------

def _child_text(element: etree._Element, namespace: str | None, local: str) -> str | None:
    for child in element.iter():
        if child is element or not isinstance(child.tag, str):
            continue
        if local_name(child) == local and (namespace is None or namespace_of(child) == namespace):
            return _text(child)
    return None


def _tuple_provided(tuple_element: etree._Element, provide: Provide) -> bool:
    if provide.all or tuple_element.get("id", "") in provide.occurrence_ids:
        return True
    contact = _child_text(tuple_element, NS_PIDF, "contact")
    if contact and (contact in provide.service_uris
                    or contact.split(":", 1)[0].lower() in provide.schemes):
        return True
    cls = _child_text(tuple_element, NS_RPID, "class")
    return cls is not None and cls in provide.classes


def _element_provided(element: etree._Element, provide: Provide) -> bool:
    if provide.all or element.get("id", "") in provide.occurrence_ids:
        return True
    cls = _child_text(element, NS_RPID, "class")
    if cls is not None and cls in provide.classes:
        return True
    device_id = _child_text(element, NS_DATA_MODEL, "deviceID")
    return device_id is not None and device_id in provide.device_ids


def _strip_attributes(element: etree._Element, t: Transformations) -> None:
    """Remove from a kept tuple/person/device the attributes this watcher may not see: its children (and
    those of a tuple's <status>, where older RPID put them) that are neither PIDF core elements (status,
    basic, contact, timestamp) nor provided by a provide-<attribute> / provide-unknown-attribute."""
    allowed = {_ATTRIBUTE_ELEMENTS[a] for a in t.attributes if a in _ATTRIBUTE_ELEMENTS}
    containers = [element, *(c for c in element if namespace_of(c) == NS_PIDF and local_name(c) == "status")]
    for container in containers:
        for child in list(container):
            if not isinstance(child.tag, str):
                continue
            ns, name = namespace_of(child), local_name(child) or ""
            if name == "note" and ns in (NS_PIDF, NS_DATA_MODEL):
                keep = "note" in t.attributes
            elif ns == NS_PIDF or (ns == NS_DATA_MODEL and name == "timestamp"):
                keep = True
            else:
                keep = (ns, name) in allowed or (ns or "", name) in t.unknown_attributes
            if not keep:
                container.remove(child)


def apply_transformations(body: bytes, transformations: Transformations) -> bytes:
    """The PIDF `body` as a watcher with these transformations may see it (RFC 5025 3.3; choices in the
    module docstring). Raises xml_util.BodyError when `body` is not XML."""
    if transformations.empty:
        return body
    root = parse_xml(body)
    t = transformations
    for child in list(root):
        if not isinstance(child.tag, str):
            continue
        ns, name = namespace_of(child), local_name(child)
        if ns == NS_PIDF and name == "tuple":
            keep = t.services is not None and _tuple_provided(child, t.services)
        elif ns == NS_DATA_MODEL and name == "person":
            keep = t.persons is not None and _element_provided(child, t.persons)
        elif ns == NS_DATA_MODEL and name == "device":
            keep = t.devices is not None and _element_provided(child, t.devices)
        elif ns == NS_PIDF and name == "note":
            keep = t.all_attributes or "note" in t.attributes
        else:
            keep = t.all_attributes or ((ns or ""), name or "") in t.unknown_attributes
        if not keep:
            root.remove(child)
        elif not t.all_attributes:
            _strip_attributes(child, t)
    return serialize(root)


# --- the presence event hooks ---------------------------------------------------------------------------

def _ruleset(rules_doc: Any) -> RuleSet | None:
    if rules_doc is None or isinstance(rules_doc, RuleSet):
        return rules_doc
    return parse_rules(rules_doc)


def _watcher_uri(watcher: Any) -> str:
    uri = getattr(watcher, "watcher_uri", None)
    if isinstance(uri, str):
        return uri
    user, domain = getattr(watcher, "watcher_user", ""), getattr(watcher, "watcher_domain", "")
    return f"sip:{user}@{domain}" if user else f"sip:{domain}"


def get_auth_status(watcher: Any, rules_doc: Any, *, sphere: str | None = None,
                    now: float | None = None) -> tuple[int, str | None]:
    """get_auth_status hook body: `watcher` is a SubscribeFacts or Subscription (watcher_user/_domain),
    `rules_doc` the pres-rules document (bytes or a parsed RuleSet) or None (-> pending).
    A document that does not parse is logged and treated as no rules (pending)."""
    try:
        rules = _ruleset(rules_doc)
    except RulesError as exc:
        log.warning("pres-rules unusable, watcher %s stays pending: %s", _watcher_uri(watcher), exc)
        return PENDING_STATUS, None
    if rules is None:
        return PENDING_STATUS, None
    return subscription_status(evaluate(rules, _watcher_uri(watcher), sphere=sphere, now=now).action)


def apply_auth_nbody(body: bytes | None, subscription: Any, rules_doc: Any, *, sphere: str | None = None,
                     now: float | None = None) -> bytes | None:
    """apply_auth_nbody hook body: the NOTIFY body `subscription`'s watcher may see.
    allow -> the body with the rules' transformations; polite-block and block -> None (no body: the
    watcher learns nothing, as measured); no rules, no matching rule, confirm -> unchanged (OpenSIPS:
    the core only sends a body to active watchers, and their state was decided already)."""
    if body is None:
        return None
    try:
        rules = _ruleset(rules_doc)
    except RulesError as exc:
        log.warning("pres-rules unusable for %s: %s", _watcher_uri(subscription), exc)
        return body
    if rules is None:
        return body
    decision = evaluate(rules, _watcher_uri(subscription), sphere=sphere, now=now)
    if decision.action in (SubHandling.BLOCK, SubHandling.POLITE_BLOCK):
        return None
    if decision.action is not SubHandling.ALLOW:
        return body
    try:
        return apply_transformations(body, decision.transformations)
    except BodyError as exc:
        log.warning("NOTIFY body for %s not transformed (%s): sent without body",
                    _watcher_uri(subscription), exc)
        return None


AuthStatusHook = Callable[[Any, Any], "tuple[int, str | None]"]
AuthNbodyHook = Callable[[Any, Any, Any], "bytes | None"]


def auth_hooks(*, clock: Callable[[], float] = time.time,
               sphere_of: Callable[[str], str | None] | None = None) -> tuple[AuthStatusHook, AuthNbodyHook]:
    """(get_auth_status, apply_auth_nbody) with the PresenceEvent hook signatures, reading the time from
    `clock` and the presentity's current sphere from `sphere_of(pres_uri)` (enable_sphere_check)."""

    def _sphere(watcher: Any) -> str | None:
        pres_uri = getattr(watcher, "pres_uri", None)
        return sphere_of(pres_uri) if sphere_of is not None and pres_uri else None

    def auth_status(watcher: Any, rules_doc: Any) -> tuple[int, str | None]:
        return get_auth_status(watcher, rules_doc, sphere=_sphere(watcher), now=clock())

    def auth_nbody(body: bytes | None, subscription: Any, rules_doc: Any) -> bytes | None:
        return apply_auth_nbody(body, subscription, rules_doc, sphere=_sphere(subscription), now=clock())

    return auth_status, auth_nbody

