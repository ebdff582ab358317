"""The redactor's shortcuts (remembered name verdicts, JSON text without a secret key left as
it is, the form search only where there is a `=`) redact exactly what the long way does."""

from __future__ import annotations

import json
import pickle

from hypothesis import given
from hypothesis import strategies as st

from shadowproxy.engine.redact import MAX_SEEN_NAMES, REDACTED, Names, Redactor

R = Redactor.build(body_fields=["password", "re:^token"])


def test_a_secret_key_after_hundreds_of_plain_ones_is_still_redacted_every_time() -> None:
    items = [{"id": i, "name": f"n{i}", "price": 1.5} for i in range(200)]
    text = json.dumps({"items": items, "password": "hunter2-x", "token_a": "t-123456"})
    for _ in range(3):  # the second and third pass answer from the remembered verdicts
        out = R.text(text)
        assert "hunter2-x" not in out and "t-123456" not in out
        assert out.count(REDACTED) == 2 and '"name": "n199"' in out


def test_json_text_without_a_secret_key_comes_back_unchanged() -> None:
    text = json.dumps({"items": [{"id": 1, 'pass"word?': 2, "note": 'a "quoted": b'}]})
    assert R.text(text) == text


def test_an_escaped_quote_in_a_secret_key_is_still_a_key() -> None:
    text = json.dumps({'my "password"': "s3cret-value", "x": 1})
    assert "s3cret-value" not in R.text(text)


def test_a_form_body_is_still_redacted() -> None:
    assert R.text("user=a&password=s3cret-value&x=1") == f"user=a&password={REDACTED}&x=1"


def test_names_remember_a_bounded_number_of_verdicts_and_answer_right_beyond_it() -> None:
    names = Names.of(["password"])
    for i in range(MAX_SEEN_NAMES + 10):
        assert f"field{i}" not in names
    assert len(names._seen) == MAX_SEEN_NAMES
    assert "PassWord" in names and "x-access-token" in names and "other" not in names


def test_remembered_verdicts_do_not_change_equality_or_pickling() -> None:
    a, b = Names.of(["password"]), Names.of(["password"])
    assert "token" in a
    assert a == b and hash(a) == hash(b)
    again = pickle.loads(pickle.dumps(a))
    assert again == a and "token" in again and "plain" not in again


KEYS = st.text(st.sampled_from("abcdefgpasswordtokenk_-"), max_size=10)
VALUES = st.text(st.sampled_from("xyz019 -_"), min_size=1, max_size=12)


@given(st.dictionaries(KEYS, VALUES, max_size=8))
def test_any_json_object_has_exactly_its_secret_keys_redacted(doc: dict[str, str]) -> None:
    out = R.text(json.dumps(doc))
    assert R.text(json.dumps(doc)) == out  # remembered verdicts answer as the first pass did
    assert json.loads(out) == {k: REDACTED if k in R.body_fields else v for k, v in doc.items()}


def test_card_numbers_are_found_at_either_end_and_grouped_but_not_inside_longer_digit_runs() -> None:
    card = "4111111111111111"
    for text in (card, f"x{card}", f"{card}.", "4111 1111 1111 1111", "4111-1111-1111-1111", f"a={card}&b"):
        assert "1111" not in R.text(text).replace("a=", ""), text
    assert R.text(f"9{card}") == f"9{card}"  # 17 digits that fail Luhn: one number, not a card
