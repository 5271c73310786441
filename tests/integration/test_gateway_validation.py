"""A request's own bad input is that request's 400 in OpenAI's shape, over real HTTP with the
official client, and the replica goes on serving the next request."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from support.runtime import USER, base_url, client, fake, serve, wait_healthy


async def test_bad_parameters_are_400s_and_the_replica_serves_on() -> None:
    async with serve(
        fake(output_tokens=3, serving={"max_concurrent": 2, "queue_capacity": 3})
    ) as rt:
        await wait_healthy(rt, "fake", 1)
        api = client(rt)
        cases = [
            ({"seed": 2**70}, "seed"),
            ({"n": 6}, "n"),  # 2 + 3 sequences is all a replica ever holds: never a 429
            ({"messages": [{"role": "user"}]}, "messages[0].content"),
            (
                {"messages": [{"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                ]}]},
                "messages[0].content[1]",
            ),
        ]  # fmt: skip
        for fields, param in cases:
            body = {"model": "fake", "messages": USER, **fields}
            with pytest.raises(openai.BadRequestError) as caught:
                await api.chat.completions.create(**body)
            assert caught.value.status_code == 400
            error = caught.value.body
            assert isinstance(error, dict)
            assert set(error) >= {"message", "type", "param", "code"}
            assert error["param"] == param
        with pytest.raises(openai.BadRequestError) as caught:
            await api.completions.create(model="fake", prompt=["a", "b", "c"], n=2)
        assert caught.value.body["param"] == "prompt"  # type: ignore[index]

        chat = await api.chat.completions.create(
            model="fake",
            messages=USER,
            n=5,
            response_format={"type": "text"},
            tool_choice="none",
        )
        assert len(chat.choices) == 5
        await wait_healthy(rt, "fake", 1)


async def test_a_method_not_allowed_names_the_allowed_ones() -> None:
    async with serve(fake()) as rt, aiohttp.ClientSession() as http:
        async with http.request("TRACE", base_url(rt) + "/v1/chat/completions") as reply:
            assert reply.status == 405
            assert reply.headers["Allow"] == "POST"
            assert set((await reply.json())["error"]) == {"message", "type", "param", "code"}
        async with http.delete(base_url(rt) + "/healthz") as reply:
            assert reply.status == 405
            assert "GET" in reply.headers["Allow"]
