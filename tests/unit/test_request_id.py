"""The request id a caller sends is kept only when it is safe as it is; anything else is
replaced by a generated id, never trimmed or escaped."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from app.core.request_id import MAX_REQUEST_ID_LENGTH, accept_request_id

SAFE = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
GENERATED = re.compile(r"[0-9a-f]{32}")
SAFE_CHARS = st.sampled_from("ABCxyz019._:-")


@given(st.text(alphabet=SAFE_CHARS, min_size=1, max_size=MAX_REQUEST_ID_LENGTH))
def test_a_safe_id_is_kept_as_sent(sent: str) -> None:
    assert accept_request_id(sent.encode()) == sent


@given(st.binary(max_size=4096))
def test_whatever_arrives_the_id_is_safe_for_a_header_a_log_line_and_the_ledger(
    raw: bytes,
) -> None:
    got = accept_request_id(raw)
    assert SAFE.fullmatch(got)
    assert got == raw.decode("latin-1") or GENERATED.fullmatch(got)


@given(
    prefix=st.text(alphabet=SAFE_CHARS, max_size=20),
    hostile=st.sampled_from(["\r\n", "\n", "\r", " ", "\x00", "é", "\u2028", "\ufeff", "/", '"']),
    suffix=st.text(alphabet=SAFE_CHARS, max_size=20),
)
def test_crlf_unicode_and_separators_are_replaced_not_passed_on(
    prefix: str, hostile: str, suffix: str
) -> None:
    sent = prefix + hostile + suffix + "\r\nSet-Cookie: x=1"
    got = accept_request_id(sent.encode())
    assert GENERATED.fullmatch(got)


@given(st.integers(min_value=MAX_REQUEST_ID_LENGTH + 1, max_value=1_000_000))
def test_a_long_id_is_replaced(length: int) -> None:
    assert GENERATED.fullmatch(accept_request_id(b"a" * length))


def test_missing_and_empty_ids_are_made() -> None:
    first, second = accept_request_id(None), accept_request_id(b"")
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second
