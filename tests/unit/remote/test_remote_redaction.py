"""``Redactor``: the exact secrets a session holds, and every part of one longer than 8
characters, leave no upstream-derived string; an error is scrubbed whole (message, param, code)."""

from __future__ import annotations

from inference_runtime.errors import RequestError, UpstreamError
from inference_runtime.remote.redaction import Redactor

KEY = "tok_live_7Qm2ZpX9vLk4RfT8wNb3HsJd"


def _leaks(text: str) -> list[str]:
    return [KEY[i : i + 9] for i in range(len(KEY) - 8) if KEY[i : i + 9] in text]


def test_the_whole_key_and_any_part_over_8_characters_are_redacted() -> None:
    redact = Redactor([KEY])
    for text in (
        f"Incorrect API key provided: {KEY}.",
        f"key={KEY[3:20]}, and again {KEY[-12:]}",
        f"masked as {KEY[:9]}****{KEY[-9:]}",
        KEY,
    ):
        out = redact(text)
        assert _leaks(out) == [], out
        assert "[redacted]" in out
    assert redact(f"only {KEY[:8]} of it") == f"only {KEY[:8]} of it"  # 8 characters prove nothing
    assert redact("nothing secret here") == "nothing secret here"


def test_shapes_are_still_redacted_and_short_keys_exactly() -> None:
    redact = Redactor(["abc12"])
    assert redact("sk-proj-0123456789abcdef was sent") == "[redacted] was sent"
    assert redact("the key abc12 was wrong") == "the key [redacted] was wrong"


def test_a_rotated_key_keeps_the_old_one_redacted() -> None:
    redact = Redactor([KEY])
    redact.update(["tok_next_ZZZZZZZZZZZZZZZZZZ"])
    assert _leaks(redact(f"{KEY} then tok_next_ZZZZZZZZZZZZZZZZZZ")) == []
    assert "ZZZZZZZZZ" not in redact("tok_next_ZZZZZZZZZZZZZZZZZZ")


def test_scrub_redacts_message_param_and_code_and_drops_the_cause() -> None:
    redact = Redactor([KEY])
    error = RequestError(f"bad key {KEY}", param=KEY, code=f"invalid:{KEY}")
    error.__cause__ = UpstreamError(KEY)
    scrubbed = redact.scrub(error)
    assert scrubbed is error
    assert _leaks(str(error)) == [] and error.param == "[redacted]"
    assert error.code == "invalid:[redacted]" and error.__cause__ is None


def test_case_does_not_hide_a_key_or_a_part_of_one() -> None:
    redact = Redactor([KEY, "abc12"])
    for text in (f"echo: {KEY.upper()}", f"part: {KEY[4:18].lower()}", "short ABC12 key"):
        out = redact(text)
        assert "[redacted]" in out, out
        assert not [p for p in (KEY.upper()[4:13], KEY.lower()[4:13], "ABC12") if p in out]
    # a character whose lower case is longer leaves positions where they were
    assert redact(f"\u0130 {KEY.upper()} \u0130") == "\u0130 [redacted] \u0130"
