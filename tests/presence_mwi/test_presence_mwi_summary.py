"""presence_mwi: the message-summary body check (RFC 3842), the event package, the module glue."""

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.modules.presence.events import BodyError
from routescript.modules.presence.notify import presentity_body
from routescript.modules.presence_mwi import (MessageSummary, MsgSummaryLine, check_message_summary,
                                              mwi_event, parse_message_summary)
from routescript.modules.presence_mwi.summary import MAX_SUMMARY_SIZE

# The body of capture 17b (PUBLISH) and 17a (the NOTIFY that passed it through).
CAPTURE_17 = (b"Messages-Waiting: yes\r\nMessage-Account: sip:frank@127.0.0.1\r\n"
              b"Voice-Message: 2/8 (0/2)\r\n")


def test_capture_body_parses():
    assert len(CAPTURE_17) == 87  # Content-Length in the capture
    assert parse_message_summary(CAPTURE_17) == MessageSummary(
        True, "sip:frank@127.0.0.1", (MsgSummaryLine("Voice-Message", 2, 8, 0, 2),))
    check_message_summary(CAPTURE_17)


@pytest.mark.parametrize("body, expected", [
    (b"Messages-Waiting: no\r\n", MessageSummary(False)),
    (b"messages-waiting:YES\n", MessageSummary(True)),                          # ABNF literals: any case; LF
    (b"Messages-Waiting : yes\r\nVoice-Message: 1/0\r\nFax-Message: 0 / 3 ( 0 / 1 )\r\n",
     MessageSummary(True, None, (MsgSummaryLine("Voice-Message", 1, 0),
                                 MsgSummaryLine("Fax-Message", 0, 3, 0, 1)))),
    (b"Messages-Waiting: yes\r\nMessage-Account: sips:vm@example.com;transport=tls\r\n",
     MessageSummary(True, "sips:vm@example.com;transport=tls")),
    (b"Messages-Waiting: yes\r\nVoice-Message: 4/0\r\n\r\nMessage-ID: <abc@x>\r\nSubject: caf\xc3\xa9\r\n",
     MessageSummary(True, None, (MsgSummaryLine("Voice-Message", 4, 0),),
                    (("Message-ID", "<abc@x>"), ("Subject", "caf\u00e9")))),
    (b"Messages-Waiting: yes\r\n\r\n\r\n", MessageSummary(True)),              # trailing blank lines
])
def test_accepted_bodies(body, expected):
    assert parse_message_summary(body) == expected


@pytest.mark.parametrize("body", [
    b"Voice-Message: 2/8\r\n",                                  # no msg-status-line
    b"Messages-Waiting: maybe\r\n",
    b"Messages-Waiting yes\r\n",                                # no colon
    b"Messages-Waiting: yes no\r\n",
    b"X Messages-Waiting: yes\r\n",
    b"Messages-Waiting: yes\r\nMessage-Account: frank\r\n",     # not a URI
    b"Messages-Waiting: yes\r\nVoice-Message: 2\r\n",
    b"Messages-Waiting: yes\r\nVoice-Message: a/b\r\n",
    b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (0)\r\n",
    b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (0/2\r\n",
    b"Messages-Waiting: yes\r\nVoice-Message: 1234567890/1\r\n",  # count beyond the bound
    b"Messages-Waiting: yes\r\nMessage-Account: sip:a@b\r\nMessage-Account: sip:c@d\r\n",
    b"Messages-Waiting: yes\r\nSubject: hello\r\n",              # extension header without the blank line
    b"Messages-Waiting: yes\r\n\r\nnot a header\r\n",
    b"Messages-Waiting: yes\r\n\r\nX-A: ok\r\n\r\n\r\nbad line\r\n",
    b"Messages-Waiting: yes\rVoice-Message: 1/1\r\n",            # bare CR
    b"Messages-Waiting: yes\r\n\r\nSubject: a\x01b\r\n",         # control character
    b"Messages-Waiting: \xff\xfe\r\n",                          # not UTF-8
    b"\r\n",
])
def test_refused_bodies_are_400(body):
    with pytest.raises(BodyError) as info:
        check_message_summary(body)
    assert (info.value.status, info.value.reason) == (400, "Bad request")


def test_bounds():
    big = b"Messages-Waiting: yes\r\n" + b"x" * MAX_SUMMARY_SIZE
    with pytest.raises(BodyError) as info:
        check_message_summary(big)
    assert info.value.status == 413
    many = b"Messages-Waiting: yes\r\n" + b"Voice-Message: 1/1\r\n" * 200
    with pytest.raises(BodyError) as info:
        check_message_summary(many)
    assert info.value.status == 400


def test_empty_body_is_left_to_the_core():
    assert check_message_summary(b"") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_body_error(data):
    try:
        check_message_summary(data)
    except BodyError as exc:
        assert exc.status in (400, 413)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"Messages-Waiting: yes", b"Voice-Message: 1/2 (0/0)", b"", b"X: y",
                                 b"Message-Account: sip:a@b", b"Messages-Waiting: no"]), max_size=8))
def test_line_soup_raises_only_body_error(lines):
    try:
        check_message_summary(b"\r\n".join(lines) + b"\r\n")
    except BodyError as exc:
        assert exc.status == 400


def test_event_package_as_opensips_registers_it():
    event = mwi_event()
    assert (event.name, event.content_type, event.default_expires) == (
        "message-summary", "application/simple-message-summary", 3600)
    assert event.code == 6 and not event.req_auth
    assert event.agg_nbody is None and event.build_empty_pres_info is None
    assert event.aux_body_processing is None
    with pytest.raises(BodyError):
        event.evs_publ_handl(b"garbage")


def test_last_publication_wins_and_no_publication_no_body():
    event = mwi_event()
    old = SimpleNamespace(body=CAPTURE_17, received_time=10.0)
    new = SimpleNamespace(body=b"Messages-Waiting: no\r\n", received_time=20.0)
    assert presentity_body(event, "sip:frank@127.0.0.1", [new, old]) == b"Messages-Waiting: no\r\n"
    assert presentity_body(event, "sip:frank@127.0.0.1", [old]) == CAPTURE_17   # unchanged, byte for byte
    assert presentity_body(event, "sip:frank@127.0.0.1", []) is None
    assert presentity_body(event, "sip:frank@127.0.0.1", [], notify_offline_body=True) is None
