"""The session's own credential never reaches a client or a log, whatever shape it has and
wherever an upstream echoes it (message, ``param``, ``code``, mid-stream); a credential or
header that cannot be sent fails the session's load and the request at once, never hangs it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from inference_runtime.testing.mock_upstream import MockUpstream
from inference_runtime.testing.mock_upstream_faults import Fault
from support.remote import anthropic, remote
from support.runtime import base_url, client, serve, wait_healthy

KEY = "tok_live_7Qm2ZpX9vLk4RfT8wNb3HsJd"
"""Not ``sk-`` shaped: redaction by shape alone lets it through."""
USER = [{"role": "user", "content": "hello upstream"}]


def _leaks(text: str) -> list[str]:
    """Parts of KEY longer than 8 characters found in ``text``."""
    return [KEY[i : i + 9] for i in range(len(KEY) - 8) if KEY[i : i + 9] in text]


@pytest.fixture
async def upstream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MockUpstream]:
    monkeypatch.setenv("MOCK_KEY", KEY)
    async with MockUpstream(api_key=KEY) as mock:
        yield mock


async def _read_stream(api: openai.AsyncOpenAI, model: str = "gpt") -> None:
    stream = await api.chat.completions.create(model=model, messages=USER, stream=True)
    async for _chunk in stream:
        pass


async def _started(deployment: dict[str, Any]) -> Any:
    context = serve(deployment)
    runtime = await context.__aenter__()
    await wait_healthy(runtime, deployment["name"], 1)
    return context, runtime


async def test_an_echoed_key_of_any_shape_is_redacted_streamed_or_not(
    upstream: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    context, runtime = await _started(remote(upstream, retry={"max_retries": 0}))
    try:
        api = client(runtime)
        seen: list[str] = []
        for status in (400, 500):  # the upstream's words kept (400) or wrapped (502)
            upstream.script(Fault.echo_key(status))
            with pytest.raises(openai.APIStatusError) as caught:
                await api.chat.completions.create(model="gpt", messages=USER)
            assert caught.value.status_code == (400 if status == 400 else 502)
            seen += [caught.value.response.text, str(caught.value)]
            assert "Incorrect API key provided" in caught.value.response.text
        upstream.script(Fault.echo_key(500, after=3))
        with pytest.raises(openai.APIError) as mid:  # as an error event, or a 502 at once
            await _read_stream(api)
        seen += [str(mid.value), repr(mid.value.body)]
        assert "Incorrect API key provided" in str(mid.value)
        assert len(upstream.requests) == 3  # every fault reached the upstream and came back
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url(runtime) + "/metrics") as metrics,
        ):
            seen.append(await metrics.text())  # error codes are metric labels
        for text in seen:
            assert _leaks(text) == [], text
        assert _leaks(caplog.text) == []
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("field", "runtime_config"),
    [
        ("runtime_config.api_key_file", {"api_key_file": "two-lines"}),
        ("runtime_config.api_key_env", {"api_key_env": "CURLY_KEY"}),
    ],
)
async def test_an_unsendable_key_fails_the_load_naming_the_field(
    field: str,
    runtime_config: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inference_runtime.remote.session import RemoteSession
    from inference_runtime.types import Deployment

    secret = tmp_path / "two-lines"
    secret.write_text(f"{KEY}\nsecond-line-of-the-file\n")
    monkeypatch.setenv("CURLY_KEY", f"{KEY}\u2019")
    if "api_key_file" in runtime_config:
        runtime_config = {"api_key_file": str(secret)}
    deployment = Deployment.from_dict(
        {"name": "gpt", "runtime": "openai", "runtime_config": runtime_config}
    )
    session = RemoteSession(deployment)
    with pytest.raises(ValueError, match=field) as caught:
        await session.load()
    assert _leaks(str(caught.value)) == []
    await session.close()


async def test_an_unsendable_header_is_refused_with_its_name() -> None:
    from inference_runtime.remote.config import RemoteConfig

    for value in ("org-1\r\nX-Injected: yes", "caf\u00e9 \u2603"):
        with pytest.raises(ValueError, match=r"runtime_config\.headers\.OpenAI-Organization"):
            RemoteConfig(base_url="http://127.0.0.1:1/v1", headers={"OpenAI-Organization": value})


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Host", "Connection"])
async def test_a_header_that_frames_the_request_cannot_be_configured(name: str) -> None:
    from inference_runtime.remote.config import RemoteConfig

    with pytest.raises(ValueError, match=rf"runtime_config\.headers\.{name}: the HTTP client"):
        RemoteConfig(base_url="http://127.0.0.1:1/v1", headers={name: "0"})
    RemoteConfig(base_url="http://127.0.0.1:1/v1", headers={"OpenAI-Organization": "org-1"})


async def test_a_request_that_cannot_be_sent_gets_a_prompt_502(
    upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is rotated to one that cannot go in a header: the 401 that makes the replica
    read it again must still end in a 502 naming the deployment, not a request that hangs."""
    context, runtime = await _started(remote(upstream))
    try:
        api = client(runtime)
        monkeypatch.setenv("MOCK_KEY", f"{KEY}\nsecond line")
        upstream.script(Fault.wrong_key())
        with pytest.raises(openai.APIStatusError) as caught:
            await asyncio.wait_for(
                api.chat.completions.create(model="gpt", messages=USER), timeout=30
            )
        assert caught.value.status_code == 502
        assert "'gpt'" in caught.value.response.text
        assert _leaks(caught.value.response.text) == []
        monkeypatch.setenv("MOCK_KEY", KEY)
        reply = await api.chat.completions.create(model="gpt", messages=USER, max_tokens=3)
        assert reply.choices[0].message.content
    finally:
        await context.__aexit__(None, None, None)


async def test_an_anthropic_upstream_echoing_the_key_is_redacted_too(
    upstream: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    deployment = anthropic(upstream, key_env="MOCK_KEY")
    deployment["runtime_config"]["retry"]["max_retries"] = 0
    context, runtime = await _started(deployment)
    try:
        api = client(runtime)
        upstream.script(Fault.echo_key(400))
        with pytest.raises(openai.BadRequestError) as refused:
            await api.chat.completions.create(model="claude", messages=USER)
        upstream.script(Fault.echo_key(500, after=2))
        with pytest.raises(openai.APIError) as mid:
            await _read_stream(api, "claude")
        assert upstream.requests[-1].api_key == KEY  # it did go out, and came back echoed
        for text in (refused.value.response.text, str(mid.value), caplog.text):
            assert _leaks(text) == [], text
        assert "Incorrect API key provided" in refused.value.response.text
    finally:
        await context.__aexit__(None, None, None)


async def test_a_replica_whose_key_cannot_load_answers_at_once_saying_why(
    upstream: MockUpstream, tmp_path: Path
) -> None:
    secret = tmp_path / "two-lines"
    secret.write_text(f"{KEY}\nsecond-line-of-the-file\n")
    spec = remote(upstream)
    spec["runtime_config"] = {"base_url": upstream.url, "api_key_file": str(secret)}
    async with serve(spec) as runtime:
        api = client(runtime)
        answers = []
        for _ in range(100):  # until the first start has failed (a few tenths of a second)
            with pytest.raises(openai.APIStatusError) as caught:
                await asyncio.wait_for(
                    api.chat.completions.create(model="gpt", messages=USER), timeout=30
                )
            answers.append(caught.value)
            if "api_key_file" in caught.value.response.text:
                break
            await asyncio.sleep(0.05)
        last = answers[-1]
        assert last.status_code == 503 and "'gpt'" in last.response.text
        assert "cannot start: runtime_config.api_key_file" in last.response.text
        assert _leaks(last.response.text) == []
        assert upstream.requests == []
