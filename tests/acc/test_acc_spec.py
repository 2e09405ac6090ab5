"""acc's pure parts: do_accounting()'s types and flags, drop_accounting()'s mask, extra_fields, and the
records rendered as OpenSIPS prints and stores them (log lines, rows, CDR duration rounding)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from routescript.modules.acc import records
from routescript.modules.acc.records import Core, Record
from routescript.modules.acc.spec import (
    drop_mask,
    mask_of,
    parse_extra_fields,
    parse_flags,
    parse_types,
)


def test_types_and_flags_as_opensips_spells_them() -> None:
    assert parse_types("LOG | db") == {"log", "db"}
    assert parse_flags("cdr|Missed|failed") == {"cdr", "missed", "failed"}
    assert parse_flags(None) == frozenset() and parse_flags("") == frozenset()
    for bad, why in (("syslog", "invalid accounting type"), ("log||db", "empty"),
                     ("aaa", "AAA"), ("evi", "event interface")):
        with pytest.raises(ValueError, match=why):
            parse_types(bad)
    with pytest.raises(ValueError, match="invalid accounting flag 'cdrs'"):
        parse_flags("cdrs")


def test_masks_add_up_and_drop_as_opensips_resets_them() -> None:
    mask = mask_of({"log", "db"}, {"cdr", "missed"})
    assert mask.on("log") and mask.on("db", "cdr") and mask.any("missed") and not mask.any("failed")
    assert mask.backends("missed") == ["log", "db"]
    assert not mask.without(drop_mask(None, None))                     # drop_accounting(): all gone
    only_db = mask.without(drop_mask({"log"}, None))                    # drop_accounting("log")
    assert not only_db.on("log") and only_db.on("db") and only_db.on("db", "cdr")
    kept = mask.without(drop_mask({"log"}, {"missed", "cdr"}))          # plain log accounting stays
    assert kept.on("log") and not kept.on("log", "missed") and kept.on("db", "missed")
    assert (mask_of({"log"}, ()) | mask_of({"db"}, {"failed"})).on("db", "failed")


def test_extra_fields_per_backend_with_shared_tags() -> None:
    extra = parse_extra_fields(["db: caller->src_user; callee -> dst_user;", "log: caller; ua->agent"])
    assert extra.tags == ("caller", "callee", "ua")
    assert extra.of("db") == (("caller", "src_user"), ("callee", "dst_user"))
    assert extra.of("log") == (("caller", "caller"), ("ua", "agent"))
    assert extra.of("aaa") == ()
    for bad, why in (("caller->src", "missing the backend separator"), ("radius: a", "invalid backend"),
                     ("aaa: a->b", "AAA"), ("db: a b->c", "is not a name"), ("db: a->x; b->x", "two tags")):
        with pytest.raises(ValueError, match=why):
            parse_extra_fields([bad])
    with pytest.raises(ValueError, match="at most 64"):
        parse_extra_fields(["log: " + "; ".join(f"t{i}" for i in range(65))])


CORE = Core("INVITE", "ft", "tt", "call-1", "200", "OK")


def test_transaction_lines_as_opensips_prints_them() -> None:
    plain = Record(CORE, 1700000000.7)
    assert records.log_line(records.REQUEST, plain, ()) == (
        "ACC: request accounted: timestamp=1700000000;method=INVITE;from_tag=ft;to_tag=tt;call_id=call-1;"
        "code=200;reason=OK")
    with_ctx = Record(CORE, 1700000005.0, context=True, created=1700000001.0, extras={"caller": "alice"})
    assert records.log_line(records.MISSED, with_ctx, (("caller", "src"), ("callee", "dst"))) == (
        "ACC: call missed: timestamp=1700000005;created=1700000001;setuptime=4;method=INVITE;from_tag=ft;"
        "to_tag=tt;call_id=call-1;code=200;reason=OK;src=alice;dst=")
    # without the cdr flag there is no creation time: 0 and 0 (OpenSIPS prints setuptime=<now>)
    answered = records.log_line(records.ANSWERED, Record(CORE, 5.0, context=True), ())
    assert ";created=0;setuptime=0;" in answered


def test_cdr_duration_is_rounded_up_and_its_row() -> None:
    cdr = Record(CORE, 1700000103.2, context=True, created=1700000000.5, start=1700000002.0,
                 end=1700000004.3, extras={"caller": "alice"})
    assert (cdr.ms_duration, cdr.duration, cdr.setuptime) == (2300, 3, 2)
    assert records.cdr_line(cdr, ()) == (
        "ACC: call ended: created=1700000000;call_start_time=1700000002;duration=3;ms_duration=2300;"
        "setuptime=2;method=INVITE;from_tag=ft;to_tag=tt;call_id=call-1;code=200;reason=OK")
    row = records.row(cdr, (("caller", "src_user"),), cdr=True)
    utc = {"time": datetime(2023, 11, 14, 22, 13, 22, tzinfo=UTC).replace(tzinfo=None),
           "created": datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC).replace(tzinfo=None)}
    assert row == {"method": "INVITE", "from_tag": "ft", "to_tag": "tt", "callid": "call-1",
                   "sip_code": "200", "sip_reason": "OK", "src_user": "alice", "setuptime": 2, "duration": 3,
                   "ms_duration": 2300, **utc}
    missed = records.row(Record(CORE, 1700000000.0, context=True), (), missed=True)
    assert "duration" not in missed and missed["created"] is None and missed["setuptime"] == 0
    assert set(records.row(Record(CORE, 1.0), ())) == {"method", "from_tag", "to_tag", "callid", "sip_code",
                                                       "sip_reason", "time"}


def test_comments_of_acc_request_functions() -> None:
    assert records.parse_comment("480 Nobody Home") == ("480", "Nobody Home")
    assert records.parse_comment("404") == ("404", "Not Found")
    # SIP's phrases (OpenSIPS error_text), not HTTP's: these were "Found", "Internal Server Error", ""
    assert records.parse_comment("302") == ("302", "Moved Temporarily")
    assert records.parse_comment("500 ") == ("500", "Server Internal Error")
    assert records.parse_comment("480") == ("480", "Temporarily Unavailable")
    assert records.parse_comment("999") == ("999", "")
    assert records.parse_comment("just a note") == ("", "just a note")
    assert records.parse_comment("") == ("", "")
