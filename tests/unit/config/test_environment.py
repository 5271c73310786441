"""Where a key is looked for, and what is said when it is not there: a variable that is not set
and one that is set but empty are told apart (the second is an operator's typo elsewhere)."""

from __future__ import annotations

import pytest

from inference_runtime.config import read_keys
from inference_runtime.config.environment import read_secret


def test_a_missing_and_an_empty_variable_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IR_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="IR_TEST_KEY is not set"):
        read_secret(env="IR_TEST_KEY")
    monkeypatch.setenv("IR_TEST_KEY", "  ")
    with pytest.raises(ValueError, match="IR_TEST_KEY is empty"):
        read_secret(env="IR_TEST_KEY")
    with pytest.raises(ValueError, match="IR_TEST_KEY is empty"):
        read_keys(env="IR_TEST_KEY")
    monkeypatch.setenv("IR_TEST_KEY", " sk-1 ")
    assert read_secret(env="IR_TEST_KEY").reveal() == "sk-1"
