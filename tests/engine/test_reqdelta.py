"""Request delta alone: which answer differences the two requests' own differences explain."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shadowproxy.engine.diff import compare_responses
from shadowproxy.engine.exchange import Request, Response
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.reqdelta import LazyRequestDelta, RequestDelta, request_delta

LIVE = Request("GET", "/items", (("page", "2"),),
               (("Host", "live.internal:8001"), ("Connection", "keep-alive")))
SHADOW = Request("GET", "/items", (("page", "2"),), (("X-Shadow-Request", "1"),))
DELTA = request_delta(LIVE, SHADOW, shadow_authority="shadow.internal:9001")
JSON = (("content-type", "application/json"),)


def explains(live: object, shadow: object, kind: str = "changed", path: str = "/next") -> bool:
    return DELTA.explains("body", path, kind, live, shadow)


def test_an_absolute_url_with_each_side_s_authority_is_explained() -> None:
    assert explains("http://live.internal:8001/items?page=3", "http://shadow.internal:9001/items?page=3")
    assert explains("live.internal:8001", "shadow.internal:9001")
    assert explains("/r?to=http%3A%2F%2Flive.internal%3A8001", "/r?to=http%3A%2F%2Fshadow.internal%3A9001")


def test_a_scheme_change_between_the_backends_is_explained_with_the_authority() -> None:
    delta = request_delta(LIVE, SHADOW, shadow_authority="shadow.internal", shadow_scheme="https")
    assert delta.explains("header", "/location", "changed", "http://live.internal:8001/a", "https://shadow.internal/a")


def test_a_real_change_next_to_the_authority_is_not_explained() -> None:
    assert not explains("http://live.internal:8001/items?page=3", "http://shadow.internal:9001/items?page=4")
    assert not explains("http://live.internal:8001/a", "http://other.internal:9001/a")
    assert not explains(1, 2)


def test_an_echoed_shadow_header_is_explained_in_any_spelling() -> None:
    assert explains(None, "1", "added", "/headers/X-Shadow-Request")
    assert explains(None, ["1"], "added", "/headers/x_shadow_request")
    assert explains(None, "1", "added", "/env/HTTP_X_SHADOW_REQUEST")
    assert explains(None, ["X-Shadow-Request", "1"], "added", "/headers/4")
    assert explains(None, "X-Shadow-Request: 1", "added", "/lines/7")
    assert not explains(None, "2", "added", "/headers/X-Shadow-Request")  # not the value sent
    assert not explains(None, "1", "added", "/headers/X-Other")


def test_a_hop_by_hop_header_only_the_live_got_is_explained_when_echoed() -> None:
    assert explains("keep-alive", None, "removed", "/headers/Connection")
    assert not explains("close", None, "removed", "/headers/Connection")


def test_echoes_inside_one_text_value_are_explained() -> None:
    live = '{"url": "http://live.internal:8001/s", "headers": {"Host": "live.internal:8001"}}'
    shadow = ('{"url": "http://shadow.internal:9001/s", "headers": {"Host": "shadow.internal:9001", '
              '"X-Shadow-Request": "1"}}')
    assert explains(live, shadow)
    assert not explains(live, shadow.replace("/s", "/t"))


def test_a_short_rewritten_value_explains_only_a_whole_value() -> None:
    rewritten = Request("GET", "/items", (("page", "3"),), SHADOW.headers)
    delta = request_delta(LIVE, rewritten, shadow_authority="shadow.internal:9001")
    assert delta.explains("body", "/page", "changed", "2", "3")
    assert not delta.explains("body", "/title", "changed", "page 2 of 9", "page 3 of 9")


def test_compare_keeps_explained_differences_apart_and_counts_only_the_rest() -> None:
    live = Response(200, JSON, b'{"self": "http://live.internal:8001/items", "n": 1}')
    shadow = Response(200, JSON, b'{"self": "http://shadow.internal:9001/items", "n": 2}')
    c = compare_responses(live, shadow, CompareOptions(), DELTA)
    assert [d.path for d in c.differences] == ["/n"]
    assert [d.path for d in c.request_delta] == ["/self"]
    plain = compare_responses(live, shadow, CompareOptions())
    assert [d.path for d in plain.differences] == ["/self", "/n"]


def test_an_echoed_url_of_a_rewritten_path_and_query_is_explained_whole() -> None:
    live = Request("POST", "/anything/orders", (), (("Host", "live.internal:8001"),))
    rewritten = Request("POST", "/anything/orders/dry-run", (("dry_run", "1"),),
                        (("X-Shadow-Request", "1"), ("Idempotency-Key", "abc123")))
    delta = request_delta(live, rewritten, shadow_authority="shadow.internal:9001")
    assert delta.explains("body", "/url", "changed", "http://live.internal:8001/anything/orders",
                          "http://shadow.internal:9001/anything/orders/dry-run?dry_run=1")
    assert delta.explains("header", "/location", "changed", "/anything/orders",
                          "/anything/orders/dry-run?dry_run=1")
    assert not delta.explains("body", "/url", "changed", "http://live.internal:8001/anything/orders",
                              "http://shadow.internal:9001/anything/orders/dry-run?dry_run=2")


def test_an_echoed_url_with_a_short_rewritten_query_value_is_explained() -> None:
    live = Request("GET", "/anything/page", (("page", "2"), ("x", "2")), (("Host", "live.internal:8001"),))
    rewritten = Request("GET", "/anything/page", (("page", "3"), ("x", "2")), SHADOW.headers)
    delta = request_delta(live, rewritten, shadow_authority="shadow.internal:9001")
    assert delta.explains("body", "/url", "changed", "http://live.internal:8001/anything/page?page=2&x=2",
                          "http://shadow.internal:9001/anything/page?page=3&x=2")
    assert delta.explains("body", "/next", "changed", "/anything/page?page=2&x=2",
                          "/anything/page?page=3&x=2")
    assert not delta.explains("body", "/url", "changed", "http://live.internal:8001/anything/page?page=2&x=2",
                              "http://shadow.internal:9001/anything/page?page=3&x=3")
    assert not delta.explains("body", "/title", "changed", "page 2 of 9", "page 3 of 9")


def test_the_authority_replaced_in_some_places_and_not_others_is_explained() -> None:
    live = Request("GET", "/get", (("url", "http://live.internal:8001/x"),),
                   (("Host", "live.internal:8001"),))
    shadow = Request("GET", "/get", live.query, SHADOW.headers)
    delta = request_delta(live, shadow, shadow_authority="shadow.internal:9001")
    assert delta.explains("body", "/url", "changed", "http://live.internal:8001/get?url=http://live.internal:8001/x",
                          "http://shadow.internal:9001/get?url=http://live.internal:8001/x")
    # in a text that is no one URL, too
    assert delta.explains("body", "/note", "changed",
                          "see http://live.internal:8001/a from live.internal:8001",
                          "see http://shadow.internal:9001/a from live.internal:8001")
    assert not delta.explains("body", "/note", "changed", "see http://live.internal:8001/a from x",
                              "see http://shadow.internal:9001/a from y")


def test_the_authority_as_a_json_object_key_is_one_member_explained() -> None:
    live = Response(200, JSON, b'{"upstreams": {"live.internal:8001": "up", "db": "up"}}')
    shadow = Response(200, JSON, b'{"upstreams": {"shadow.internal:9001": "up", "db": "up"}}')
    c = compare_responses(live, shadow, CompareOptions(), DELTA)
    assert c.differences == ()
    assert sorted(d.kind for d in c.request_delta) == ["added", "removed"]
    # another value under the substituted key is a real change; so is any other key
    changed = Response(200, JSON, b'{"upstreams": {"shadow.internal:9001": "down", "db": "up"}}')
    assert len(compare_responses(live, changed, CompareOptions(), DELTA).differences) == 2
    other = Response(200, JSON, b'{"upstreams": {"other.internal:9001": "up", "db": "up"}}')
    assert len(compare_responses(live, other, CompareOptions(), DELTA).differences) == 2


def test_a_lazy_delta_is_worked_out_only_when_a_difference_asks_and_then_explains_as_the_eager_one() -> None:
    made: list[RequestDelta] = []

    def make() -> RequestDelta:
        made.append(DELTA)
        return DELTA

    body = b'{"next": "http://live.internal:8001/items?page=3"}'
    live = Response(200, JSON, body)
    equal = compare_responses(live, Response(200, JSON, body), CompareOptions(), LazyRequestDelta(make))
    assert equal.differences == () and made == []  # equal answers: never worked out
    echoed = Response(200, JSON, body.replace(b"live.internal:8001", b"shadow.internal:9001"))
    lazy = compare_responses(live, echoed, CompareOptions(), LazyRequestDelta(make))
    eager = compare_responses(live, echoed, CompareOptions(), DELTA)
    assert len(made) == 1
    assert lazy.differences == eager.differences == ()
    assert lazy.request_delta == eager.request_delta and len(lazy.request_delta) == 1


def test_a_lazy_delta_is_not_worked_out_for_a_difference_no_delta_could_explain() -> None:
    made: list[RequestDelta] = []

    def work_out() -> RequestDelta:
        made.append(DELTA)
        return DELTA

    lazy = LazyRequestDelta(work_out)
    live = Response(200, JSON, b'{"price": 13.74}')
    out = compare_responses(live, Response(200, JSON, b'{"price": 14.74}'), CompareOptions(), lazy)
    assert [d.path for d in out.differences] == ["/price"] and made == []
    assert not lazy.explains("status", "", "changed", 200, 500) and made == []


def long_path(i: int) -> str:
    words = ("alpha", "beta", "gamma", "delta", "omega", "users", "orders", "items")
    return f"/{i}x/" + "/".join(words[(i * 7 + k * k) % 8] for k in range(60_000 // 6))


def test_request_items_of_60_kb_are_explained_and_no_pattern_that_long_stays_in_a_cache() -> None:
    """Each 60 KB path's absolute URL made a regex of ~1 MB, kept by our cache (257 of them) and
    by the re module's (512): the worker grew ~1.3 MB a request (334 MB after 200 requests)."""
    import re
    import tracemalloc

    from shadowproxy.engine import reqdelta

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(40):
            path = long_path(i)
            live = Request("GET", path, (), (("Host", "live.internal:8001"), ("X-Long", path)))
            shadow = Request("GET", path, (), ())
            delta = request_delta(live, shadow, shadow_authority="shadow.internal:9001")
            assert delta.explains("body", "/url", "changed", f"at http://live.internal:8001{path} .",
                                  f"at http://shadow.internal:9001{path} .")
            assert not delta.explains("body", "/url", "changed", f"at http://live.internal:8001{path} .",
                                      f"at http://shadow.internal:9001{path}x .")
            echoed = f'{{"a": 1, "X-Long": "{path}"}}'
            assert delta.explains("body", "/headers", "changed", echoed, '{"a": 1}')
            del live, shadow, delta
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    cache: dict[tuple[object, str, int], object] = getattr(re, "_cache", {})
    assert max((len(key[1]) for key in cache), default=0) <= reqdelta.MAX_CACHED_PATTERN
    ours = [*reqdelta._RX_CACHE.items(), *reqdelta._ECHO_CACHE.items()]
    assert all(len(rx.pattern) <= reqdelta.MAX_CACHED_PATTERN for _, rx in ours)
    assert grown < 8 * 1024 * 1024, grown  # 40 requests: ~50 MB before


@given(st.text("abc", max_size=40), st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=5))
def test_replacing_items_without_a_regex_replaces_what_the_regex_did(text: str, items: list[str]) -> None:
    import re

    from shadowproxy.engine.reqdelta import _replace_each

    ordered = tuple(sorted(set(items), key=len, reverse=True))
    rx = re.compile("|".join(re.escape(i) for i in ordered))
    assert _replace_each(text, ordered, lambda s: f"<{s}>") == rx.sub(lambda m: f"<{m.group(0)}>", text)
