"""Admin masking masks secrets, not words: every runtime's settings read back as themselves,
while key-like string fields and every header value are masked, and a masked spec sent back
keeps its secrets."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from inference_runtime.gateway.admin import MASK, mask_secrets, unmask
from inference_runtime.types import Deployment
from inference_runtime.types.vllm_config import VllmConfig

SETTINGS: dict[str, dict[str, Any]] = {
    "fake": {"token_latency_ms": 2, "prefill_latency_ms": 1, "output_tokens": 8, "max_context": 64},
    "transformers": {"dtype": "float32", "max_model_len": 512, "kv_rows": 4, "kv_length": 128},
    "embeddings": {"max_batch_size": 8, "matryoshka": True, "max_input_tokens": 256},
    "vllm": msgspec.to_builtins(
        VllmConfig(max_num_batched_tokens=2048, max_logprobs=5, tokenizer="tok", seed=1)
    ),
    "openai": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "K", "max_concurrent": 2},
    "anthropic": {"api_key_file": "/run/secrets/k", "anthropic_version": "2023-06-01"},
}


@pytest.mark.parametrize("runtime", sorted(SETTINGS))
def test_every_runtimes_spec_reads_back_as_itself(runtime: str) -> None:
    deployment = Deployment.from_dict(
        {
            "name": "d",
            "runtime": runtime,
            "runtime_config": SETTINGS[runtime],
            "serving": {"max_tokens": 100, "max_batched_tokens": 4096},
        }
    )
    assert Deployment.from_dict(mask_secrets(deployment.to_dict())) == deployment


def test_secrets_and_every_header_value_are_masked() -> None:
    spec = {
        "runtime_config": {
            "api_key": "sk-1",
            "admin_key": "a",
            "access_token": "t",
            "client_secret": "s",
            "password": "p",
            "api_key_env": "KEY_VAR",
            "headers": {"X-Team": "team-a", "Authorization": "Bearer x", "Empty": ""},
            "nested": {"auth_token": "n", "max_tokens": 5, "token": 3},
        }
    }
    config = mask_secrets(spec)["runtime_config"]
    assert config["headers"] == {"X-Team": MASK, "Authorization": MASK, "Empty": ""}
    assert [config[k] for k in ("api_key", "admin_key", "access_token", "client_secret")] == [
        MASK
    ] * 4
    assert config["password"] == MASK and config["api_key_env"] == "KEY_VAR"
    assert config["nested"] == {"auth_token": MASK, "max_tokens": 5, "token": 3}


def test_a_masked_spec_sent_back_keeps_its_secrets_and_takes_changes() -> None:
    current = {"runtime_config": {"headers": {"A": "secret-a", "B": "b"}, "api_key": "k"}}
    sent = mask_secrets(current)
    assert unmask(sent, current) == current
    sent["runtime_config"]["headers"]["B"] = "new-b"
    assert unmask(sent, current)["runtime_config"]["headers"] == {"A": "secret-a", "B": "new-b"}
    # a field that held no secret takes "***" as it is
    assert unmask({"runtime_config": {"model": MASK}}, {"runtime_config": {"model": "m"}}) == {
        "runtime_config": {"model": MASK}
    }


def test_credentials_in_a_url_are_masked_and_kept_on_put() -> None:
    current = {
        "runtime_config": {
            "proxy": "http://corp:hunter2-secret@proxy.internal:3128",
            "base_url": "https://api.example.com/v1",
        }
    }
    masked = mask_secrets(current)
    assert masked["runtime_config"]["proxy"] == f"http://{MASK}@proxy.internal:3128"
    assert "hunter2" not in str(masked)
    assert masked["runtime_config"]["base_url"] == "https://api.example.com/v1"
    assert unmask(masked, current) == current
    moved = {"runtime_config": {**masked["runtime_config"], "proxy": "http://other:3128"}}
    assert unmask(moved, current)["runtime_config"]["proxy"] == "http://other:3128"


def test_secret_named_query_values_of_a_url_are_masked() -> None:
    current = {"base_url": "https://api.example.com/v1?api_key=qsecret123456&region=eu&token=t9"}
    masked = mask_secrets(current)
    assert masked["base_url"] == f"https://api.example.com/v1?api_key={MASK}&region=eu&token={MASK}"
    assert unmask(masked, current) == current
