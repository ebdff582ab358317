"""The noise engine alone: the decision rule, pointer folding, value shapes, the state file."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shadowproxy.engine.diff import Comparison, Difference
from shadowproxy.engine.noise import (
    MAX_FIELDS_PER_ROUTE,
    STATE_SCHEMA,
    NoiseConfig,
    NoiseState,
    NoiseStateError,
    field_name,
    fields_of,
    fold,
    format_change,
    is_reported,
    parse_field_name,
    shape_of,
    shared_shape,
    zone_shift,
)

NOW = 1_790_000_000.0
AUTO = NoiseConfig(mode="auto")


def comp(*diffs: Difference, kind: str = "json") -> Comparison:
    return Comparison(tuple(diffs), (), kind)


def changed(path: str, live: Any = 1, shadow: Any = 2, part: str = "body") -> Difference:
    return Difference(part, path, "changed", live, shadow)


# -- the decision rule: Diffy's three conditions, each at its boundary ----------------------


def test_field_differing_only_live_vs_shadow_is_reported() -> None:
    assert is_reported(100, 100, 20, 0)


def test_field_differing_as_often_in_the_pair_is_not_reported() -> None:
    assert not is_reported(100, 100, 20, 20)


def test_field_differing_more_often_in_the_pair_is_not_reported() -> None:
    assert not is_reported(100, 10, 10, 5)  # raw 10% < noise 50%


def test_relative_gap_exactly_at_the_threshold_is_not_reported() -> None:
    # raw 3/4, noise 1/2: |0.75-0.5|/(0.75+0.5) = 0.2 exactly
    assert not is_reported(4, 3, 2, 1, relative_gap=0.2, absolute_gap=0.0)


def test_relative_gap_just_above_the_threshold_is_reported() -> None:
    # raw 0.75, noise 0.49: gap 0.26/1.24 = 0.2097
    assert is_reported(100, 75, 100, 49, relative_gap=0.2, absolute_gap=0.0)


def test_relative_gap_just_below_the_threshold_is_not_reported() -> None:
    # raw 0.75, noise 0.51: gap 0.24/1.26 = 0.19
    assert not is_reported(100, 75, 100, 51, relative_gap=0.2, absolute_gap=0.0)


def test_absolute_gap_exactly_at_the_threshold_is_not_reported() -> None:
    # raw 3/10000, noise 0: the absolute gap is 0.0003 exactly; relative gap 1
    assert not is_reported(10_000, 3, 10, 0, relative_gap=0.2, absolute_gap=0.0003)


def test_absolute_gap_just_above_the_threshold_is_reported() -> None:
    assert is_reported(10_000, 4, 10, 0, relative_gap=0.2, absolute_gap=0.0003)


def test_raw_equal_to_noise_is_not_reported_even_with_zero_gaps() -> None:
    assert not is_reported(10, 5, 10, 5, relative_gap=0.0, absolute_gap=0.0)


def test_without_any_pair_every_difference_is_reported() -> None:
    assert is_reported(10, 1, 0, 0)


def test_a_field_that_never_differed_is_not_reported() -> None:
    assert not is_reported(10, 0, 10, 0)


def test_gaps_come_from_the_config() -> None:
    state = NoiseState()
    for i in range(10):
        state.observe("r", comp(changed("/a")), comp(changed("/a")) if i < 6 else None)
    # raw 10/10, noise 6/6 at first: noise
    assert state.judged_noise("r", ("body", "/a", "changed"), AUTO)
    for _ in range(4):
        state.observe("r", comp(changed("/a")), comp())
    # pairs 10, noise 6/10 = 0.6 against raw 14/14 = 1.0: relative gap 0.25
    assert not state.judged_noise("r", ("body", "/a", "changed"), AUTO)
    assert state.judged_noise("r", ("body", "/a", "changed"), NoiseConfig(mode="auto", relative_gap=0.3))


# -- pointer folding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pointer", "folded"),
    [
        ("/items/3/updated_at", "/items/*/updated_at"),
        ("/a/0/b/12/c", "/a/*/b/*/c"),
        ("/0", "/*"),
        ("", ""),
        ("/id", "/id"),
        ("/v1/x2", "/v1/x2"),
        ("/a~1b/7", "/a~1b/*"),
        ("/-1", "/-1"),
        ("/٣", "/٣"),  # a non-ASCII digit is no array index
    ],
)
def test_fold_replaces_array_indexes_by_a_star(pointer: str, folded: str) -> None:
    assert fold(pointer) == folded


def test_fields_fold_json_pointers_but_keep_text_lines_and_headers() -> None:
    both = comp(changed("/items/4/ts"), changed("/items/5/ts"))
    assert fields_of(both) == {("body", "/items/*/ts", "changed")}
    assert fields_of(comp(changed("/lines/3"), kind="text")) == {("text", "/lines/3", "changed")}
    assert fields_of(comp(changed("/etag", part="header"))) == {("header", "/etag", "changed")}


def test_the_status_line_is_never_a_noise_field() -> None:
    assert fields_of(comp(Difference("status", "", "changed", 200, 500))) == set()


def test_field_names_round_trip() -> None:
    for f in (("body", "/items/*/ts", "changed"), ("header", "/etag", "added"), ("bytes", "", "changed")):
        assert parse_field_name(field_name(f)) == f[:2]
    with pytest.raises(NoiseStateError, match="bad field"):
        parse_field_name("nowhere:/x")


# -- value shapes -----------------------------------------------------------------------------


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (str(uuid.uuid4()), "uuid"),
        (str(uuid.uuid4()).upper(), "uuid"),
        (uuid.uuid4().hex, "token"),
        ("req_" + uuid.uuid4().hex[:20], "token"),
        ("0123456789abcdef", "token"),
        (iso(NOW), "timestamp"),
        (iso(NOW - 3600).replace("+00:00", "Z"), "timestamp"),
        (datetime.fromtimestamp(NOW, UTC).replace(tzinfo=None).isoformat(), "timestamp"),
        (NOW, "timestamp"),
        (int(NOW), "timestamp"),
        (int(NOW * 1000), "timestamp"),
        (int(NOW * 1_000_000), "timestamp"),
        (int(NOW * 1e9), "timestamp"),
        (str(NOW), "timestamp"),
    ],
)
def test_volatile_shapes_are_recognised(value: Any, kind: str) -> None:
    found = shape_of(value, NOW)
    assert found is not None and found.kind == kind


@pytest.mark.parametrize(
    "value",
    [
        "Ada",
        "1234567890123456789",  # digits only: a number, not a token
        "abcdef",  # too short for a token
        iso(NOW - 3 * 86_400),  # a timestamp, but not near now
        NOW - 3 * 86_400,
        42,
        True,
        None,
        [1, 2],
        "2026-13-45T99:99",  # looks like ISO 8601, is not a date
        float("nan"),
    ],
)
def test_ordinary_values_have_no_volatile_shape(value: Any) -> None:
    assert shape_of(value, NOW) is None


def test_shapes_must_match_in_form_on_both_sides() -> None:
    assert shared_shape(str(uuid.uuid4()), str(uuid.uuid4()), NOW) is not None
    assert shared_shape(str(uuid.uuid4()), str(uuid.uuid4()).upper(), NOW) is None  # case changed
    assert shared_shape(int(NOW), int(NOW * 1000), NOW) is None  # seconds became milliseconds
    assert shared_shape(iso(NOW), iso(NOW).replace("+00:00", "Z"), NOW) is None  # format changed
    assert shared_shape("req_" + "a1" * 10, "ord_" + "b2" * 10, NOW) is None  # prefix changed
    assert shared_shape(str(uuid.uuid4()), "Ada", NOW) is None


def http_date(ts: float) -> str:
    from email.utils import formatdate

    return formatdate(ts, usegmt=True)


def uuid_v7() -> str:
    u = uuid.uuid4().hex
    return f"{u[:8]}-{u[8:12]}-7{u[13:16]}-{u[16:20]}-{u[20:]}"


@pytest.mark.parametrize(
    ("live", "shadow"),
    [
        (str(uuid.uuid4()), str(uuid.uuid4()).upper()),  # UUID case
        (str(uuid.uuid4()), uuid_v7()),  # UUID version
        (uuid.uuid4().hex, uuid.uuid4().hex[:24]),  # hex length
        (uuid.uuid4().hex, uuid.uuid4().hex.upper()),  # hex case
        (int(NOW), int(NOW * 1000)),  # epoch seconds became milliseconds
        (str(int(NOW)), str(int(NOW * 1000))),  # the same as strings
        (iso(NOW), http_date(NOW)),  # RFC 3339 became an HTTP-date
        (http_date(NOW), int(NOW)),  # an HTTP-date became epoch seconds
        (iso(NOW).replace("+00:00", "Z"), iso(NOW)),  # Z became +00:00
        ("2026-09-21T12:00:00.123Z", "2026-09-21T12:00:00.123456Z"),  # ms became us
        ("2026-09-21T12:00:00.123456Z", "2026-09-21T12:00:00.123456789Z"),  # us became ns
    ],
)
def test_a_changed_format_is_real_even_where_values_are_noise(live: Any, shadow: Any) -> None:
    assert format_change(live, shadow, NOW)
    state = NoiseState()
    d = changed("/v", live, shadow)
    for _ in range(10):  # the pairs see the field vary every time: by the counts it is noise
        state.observe("r", comp(d), comp(changed("/v", live, live)))
    assert state.judged_noise("r", ("body", "/v", "changed"), AUTO)
    split = state.split("r", comp(d), AUTO, now=NOW, elapsed_s=0.5)
    assert split.real == (d,) and split.noise == ()


@pytest.mark.parametrize(
    ("live", "shadow"),
    [
        (str(uuid.uuid4()), str(uuid.uuid4())),
        ("12345678-1234-4234-9234-123456789012", str(uuid.uuid4())),  # no hex letters: fits either case
        ("2026-09-21T12:00:00.12345678Z", "2026-09-21T12:00:00.123456789Z"),  # trailing zero trimmed
        ("2026-09-21T12:00:00Z", "2026-09-21T12:00:00.5Z"),  # a whole second has no fraction
        (http_date(NOW), http_date(NOW + 1)),
        (int(NOW), int(NOW) + 1),
    ],
)
def test_the_same_format_with_other_values_is_not_a_format_change(live: Any, shadow: Any) -> None:
    assert not format_change(live, shadow, NOW)


def test_http_date_is_a_timestamp_shape_and_moves_with_the_clock() -> None:
    shape = shape_of(http_date(NOW), NOW)
    assert shape is not None and shape.kind == "timestamp" and shape.seconds == int(NOW)
    state = NoiseState()
    d = changed("/last-modified", http_date(NOW - 1), http_date(NOW), part="header")
    state.observe("r", comp(d))
    assert state.split("r", comp(d), AUTO, now=NOW, elapsed_s=1.0).noise == ("header:/last-modified",)


def test_uuid_field_is_noise_once_a_pair_saw_it_vary() -> None:
    state = NoiseState()
    d = changed("/id", str(uuid.uuid4()), str(uuid.uuid4()))
    cfg = NoiseConfig(mode="auto", relative_gap=0.0, absolute_gap=0.0)
    state.observe("r", comp(d), comp())
    assert state.split("r", comp(d), cfg, now=NOW).real == (d,)  # the pair said stable: real
    state.observe("r", comp(d), comp(changed("/id")))
    # by counts alone raw 2/2 against noise 1/2 would be reported; the shape settles it
    assert not state.judged_noise("r", ("body", "/id", "changed"), cfg)
    split = state.split("r", comp(d), cfg, now=NOW)
    assert split.real == () and split.noise == ("body:/id",)


def test_uuid_shape_without_counts_is_not_noise() -> None:
    state = NoiseState()
    d = changed("/id", str(uuid.uuid4()), str(uuid.uuid4()))
    state.observe("r", comp(d))
    assert state.split("r", comp(d), AUTO, now=NOW).real == (d,)


def test_timestamp_that_moved_with_the_clock_is_noise_at_once() -> None:
    state = NoiseState()
    d = changed("/at", iso(NOW - 1.5), iso(NOW))
    state.observe("r", comp(d))
    assert state.split("r", comp(d), AUTO, now=NOW, elapsed_s=1.5).noise == ("body:/at",)


def test_timestamp_that_moved_further_than_the_clock_is_real() -> None:
    state = NoiseState()
    d = changed("/at", iso(NOW - 3600), iso(NOW))
    state.observe("r", comp(d))
    assert state.split("r", comp(d), AUTO, now=NOW, elapsed_s=1.5).real == (d,)


def test_shapes_off_leaves_only_the_counts() -> None:
    state = NoiseState()
    d = changed("/at", iso(NOW - 1), iso(NOW))
    state.observe("r", comp(d))
    no_shapes = NoiseConfig(mode="auto", shapes=False)
    assert state.split("r", comp(d), no_shapes, now=NOW, elapsed_s=1).real == (d,)


def test_a_removed_field_is_never_noise_by_shape() -> None:
    state = NoiseState()
    d = Difference("body", "/at", "removed", iso(NOW), None)
    state.observe("r", comp(d))
    assert state.split("r", comp(d), AUTO, now=NOW, elapsed_s=5).real == (d,)


# -- learning and splitting ----------------------------------------------------------------


def test_volatile_field_is_noise_and_real_change_stays_real() -> None:
    state = NoiseState()
    vol, real = changed("/request_id", "a", "b"), changed("/name", "Ada", "Grace")
    for _ in range(20):
        state.observe("r", comp(vol, real), comp(changed("/request_id", "b", "c")))
        split = state.split("r", comp(vol, real), AUTO, now=NOW)
        assert split.real == (real,)
        assert split.noise == ("body:/request_id",)


def test_an_exchange_differing_only_in_noise_is_noise_only() -> None:
    state = NoiseState()
    vol = changed("/items/0/ts", "a", "b")
    state.observe("r", comp(vol), comp(changed("/items/3/ts")))
    assert state.split("r", comp(vol), AUTO, now=NOW).noise_only


def test_noise_is_learned_per_route() -> None:
    state = NoiseState()
    vol = changed("/v", "a", "b")
    state.observe("a", comp(vol), comp(vol))
    state.observe("b", comp(vol), comp())
    assert state.split("a", comp(vol), AUTO, now=NOW).noise_only
    assert state.split("b", comp(vol), AUTO, now=NOW).real == (vol,)


def test_noise_is_learned_per_difference_kind() -> None:
    state = NoiseState()
    state.observe("r", comp(changed("/nick")), comp(changed("/nick")))
    gone = Difference("body", "/nick", "removed", "x", None)
    state.observe("r", comp(gone), comp(changed("/nick")))
    assert state.split("r", comp(gone), AUTO, now=NOW).real == (gone,)


def test_mode_off_splits_nothing() -> None:
    state = NoiseState()
    vol = changed("/v")
    state.observe("r", comp(vol), comp(vol))
    assert state.split("r", comp(vol), NoiseConfig(), now=NOW).real == (vol,)


def test_warmup_pairs_every_read_then_samples() -> None:
    state = NoiseState()
    cfg = NoiseConfig(mode="auto", warmup=3, sample=0.5)
    assert [state.want_pair("r", cfg, "shadow", 0.9) for _ in range(5)] == [True, True, True, False, False]
    assert state.want_pair("r", cfg, "shadow", 0.4)


def test_default_sample_depends_on_the_partner() -> None:
    cfg = NoiseConfig(mode="auto", warmup=0)
    state = NoiseState()
    assert not state.want_pair("r", cfg, "shadow", 0.06)
    assert state.want_pair("r", cfg, "shadow", 0.04)
    assert state.want_pair("r", cfg, "secondary", 0.99)


def test_partner_follows_the_mode() -> None:
    assert NoiseConfig(mode="auto").partner(has_secondary=False) == "shadow"
    assert NoiseConfig(mode="auto").partner(has_secondary=True) == "secondary"
    assert NoiseConfig(mode="secondary").partner(has_secondary=False) is None
    assert NoiseConfig(mode="off").partner(has_secondary=True) is None
    with pytest.raises(ValueError, match="noise mode 'twice'"):
        NoiseConfig(mode="twice")


def test_warmup_counts_pairs_learned_before_a_restart() -> None:
    state = NoiseState()
    for _ in range(3):
        state.observe("r", comp(), comp())
    again = NoiseState.from_dict(state.to_dict())
    assert not again.want_pair("r", NoiseConfig(mode="auto", warmup=3, sample=0.0), "shadow", 0.5)


def test_fields_per_route_are_bounded() -> None:
    state = NoiseState()
    diffs = [changed(f"/k{i}") for i in range(MAX_FIELDS_PER_ROUTE + 5)]
    state.observe("r", comp(*diffs))
    assert len(state.totals["r"].fields) == MAX_FIELDS_PER_ROUTE
    assert state.totals["r"].not_kept == 5


# -- the interval counts and the state file ------------------------------------------------


def test_interval_counts_start_afresh_after_each_take() -> None:
    state = NoiseState()
    state.observe("r", comp(changed("/v")), comp(changed("/v")))
    state.split("r", comp(changed("/v")), AUTO, now=NOW)
    first = state.take_interval()
    assert first == {"r": {"compared": 1, "pairs": 1, "fields": [
        {"field": "body:/v", "kind": "changed", "raw": 1, "noise": 1, "cancelled": 1}]}}
    assert state.take_interval() == {}
    assert state.totals["r"].compared == 1


def test_state_round_trips_through_json() -> None:
    state = NoiseState()
    state.observe("/users/{id}", comp(changed("/items/2/ts"), changed("/x-id", part="header")),
                  comp(changed("/items/0/ts")))
    state.observe("/users/{id}", comp(changed("/lines/4"), kind="text"))
    state.split("/users/{id}", comp(changed("/items/2/ts")), AUTO, now=NOW)
    text = json.dumps(state.to_dict("2026-11-24T03:00:00.000Z"))
    again = NoiseState.from_dict(json.loads(text))
    assert again.to_dict() == state.to_dict()
    assert again.totals["/users/{id}"].fields == state.totals["/users/{id}"].fields
    assert json.loads(text)["schema"] == STATE_SCHEMA


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "not a shadowproxy noise state"),
        ({"schema": "other"}, "not a shadowproxy noise state"),
        ({"schema": STATE_SCHEMA, "routes": []}, "routes: expected an object"),
        ({"schema": STATE_SCHEMA, "routes": {"r": 3}}, "routes['r']: expected an object"),
        ({"schema": STATE_SCHEMA, "routes": {"r": {"compared": -1}}}, "compared: expected a count"),
        ({"schema": STATE_SCHEMA, "routes": {"r": {"pairs": "2"}}}, "pairs: expected a count"),
        ({"schema": STATE_SCHEMA, "routes": {"r": {"fields": [{"field": "x", "kind": "changed"}]}}},
         "fields[0]: bad field 'x'"),
        ({"schema": STATE_SCHEMA, "routes": {"r": {"fields": [{"field": "body:/a"}]}}},
         "expected an object with field, kind"),
    ],
)
def test_bad_state_documents_say_what_is_wrong(doc: Any, message: str) -> None:
    with pytest.raises(NoiseStateError, match=message.replace("[", r"\[").replace("(", r"\(")):
        NoiseState.from_dict(doc)


def test_noise_fields_lists_what_export_would_silence() -> None:
    state = NoiseState()
    now = time.time()
    for _ in range(5):
        state.observe("r", comp(changed("/v"), changed("/real")), comp(changed("/v")))
        at = changed("/at", iso(now - 1), iso(now))
        state.observe("r", comp(at))
        state.split("r", comp(at), AUTO, now=now, elapsed_s=1)
    names = [field_name(f) for f, _ in state.noise_fields("r", AUTO)]
    assert names == ["body:/at", "body:/v"]


def test_recorded_timestamp_is_judged_by_when_it_was_recorded() -> None:
    """Replay: the live answer is a recording from a year ago; its clock reading and the
    shadow's fresh one are both clock readings, apart by exactly the time in between."""
    state = NoiseState()
    year = 365 * 86_400.0
    d = changed("/at", iso(NOW - year), iso(NOW))
    state.observe("r", comp(d))
    assert state.split("r", comp(d), AUTO, now=NOW, elapsed_s=year).noise == ("body:/at",)
    stored = changed("/created_at", iso(NOW - 2 * year), iso(NOW))  # not the recording's time
    state.observe("r", comp(stored))
    assert state.split("r", comp(stored), AUTO, now=NOW, elapsed_s=year).real == (stored,)


def test_a_timestamp_shifted_by_whole_quarter_hours_is_a_zone_shift_not_a_clock_reading() -> None:
    def z(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    t = NOW + 0.123
    assert zone_shift(z(t), z(t + 3600.004), NOW, 0.01)  # one hour off
    assert zone_shift(z(t), z(t - 5.5 * 3600), NOW, 0.01)  # UTC+05:30 written as UTC
    assert not zone_shift(z(t), z(t + 0.5), NOW, 0.6)  # the clock moved
    assert not zone_shift(z(t), z(t + 1234.5), NOW, 0.01)  # no whole quarter hour
    assert not zone_shift(z(t), z(t + 3600.004), NOW, 3600.0)  # a recording an hour old
    top = NOW - NOW % 3600  # both rounded to the hour: an expiry slot, not a shifted clock
    assert not zone_shift(z(top), z(top + 3600), NOW, 0.01)
