"""The admin API over real HTTP: create, read, update (rolling), scale, delete, status, masked
secrets; and the auth rules and request limits of the gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from inference_runtime import Runtime, RuntimeConfig
from inference_runtime.gateway import key_throttle
from support.runtime import USER, base_url, client, fake, serve, wait_healthy

ADMIN = {"Authorization": "Bearer admin-secret"}
AUTH = {"api_keys": ["key-one", "key-two"], "admin_key": "admin-secret"}


async def call(
    runtime: Runtime, method: str, path: str, body: Any = None, headers: Any = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url(runtime) + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def eventually(runtime: Runtime, path: str, check: Any, *, timeout: float = 10) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        _, body = await call(runtime, "GET", path, headers=ADMIN)
        if check(body):
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.02)


async def test_deployment_lifecycle_over_http() -> None:
    async with serve(sections={"auth": AUTH}) as runtime:
        spec = {
            "name": "team/chat",
            "runtime": "fake",
            "replicas": 2,
            "runtime_config": {"output_tokens": 4},
        }
        status, view = await call(runtime, "POST", "/admin/deployments", spec, ADMIN)
        assert status == 201 and view["name"] == "team/chat" and view["source"] == "api"
        status, body = await call(runtime, "POST", "/admin/deployments", spec, ADMIN)
        assert status == 409 and body["error"]["code"] == "conflict"
        view = await eventually(
            runtime, "/admin/deployments/team%2Fchat", lambda v: v["state"] == "ready"
        )
        assert view["replicas"] == {"desired": 2, "ready": 2, "total": 2}
        assert {r["phase"] for r in view["replica_list"]} == {"running"}

        api = client(runtime, api_key="key-one")
        reply = await api.chat.completions.create(model="team/chat", messages=USER)
        assert reply.usage is not None and reply.usage.completion_tokens == 5  # 4 words + EOS

        # update: a changed spec rolls the replicas, then serves the new spec
        changed = {**spec, "runtime_config": {"output_tokens": 6}}
        status, view = await call(runtime, "PUT", "/admin/deployments/team/chat", changed, ADMIN)
        assert status == 200 and view["revision"] == 2
        view = await eventually(
            runtime,
            "/admin/deployments/team/chat",
            lambda v: v["state"] == "ready" and all(r["current"] for r in v["replica_list"]),
        )
        assert sorted(r["id"] for r in view["replica_list"]) == ["team/chat#2", "team/chat#3"]
        reply = await api.chat.completions.create(model="team/chat", messages=USER)
        assert reply.usage is not None and reply.usage.completion_tokens == 7

        status, view = await call(
            runtime, "POST", "/admin/deployments/team/chat/scale", {"replicas": 1}, ADMIN
        )
        assert status == 200 and view["replicas"]["desired"] == 1
        await eventually(
            runtime, "/admin/deployments/team/chat", lambda v: v["replicas"]["total"] == 1
        )
        status, body = await call(runtime, "GET", "/admin/status", headers=ADMIN)
        assert status == 200 and body["deployments"][0]["name"] == "team/chat"
        assert body["nodes"]  # this machine, probed

        status, body = await call(runtime, "DELETE", "/admin/deployments/team/chat", None, ADMIN)
        assert status == 200 and body["deleted"] is True
        with pytest.raises(openai.NotFoundError):
            await api.chat.completions.create(model="team/chat", messages=USER)
        status, body = await call(runtime, "GET", "/admin/deployments/team/chat", None, ADMIN)
        assert status == 404


async def test_bad_admin_input_gets_clear_errors() -> None:
    async with serve() as runtime:  # loopback with no key at all: the admin API is open
        status, body = await call(runtime, "POST", "/admin/deployments", {"name": "x"})
        assert status == 400 and "runtime" in body["error"]["message"]
        status, body = await call(
            runtime, "POST", "/admin/deployments", {"name": "x", "runtime": "nope"}
        )
        assert status == 400 and "runtime" in body["error"]["message"]
        status, body = await call(
            runtime, "PUT", "/admin/deployments/a", {"name": "b", "runtime": "fake"}
        )
        assert status == 400 and body["error"]["param"] == "name"
        status, body = await call(runtime, "POST", "/admin/deployments/zz/scale", {"replicas": -1})
        assert status == 400 and body["error"]["param"] == "replicas"
        status, body = await call(runtime, "POST", "/admin/deployments/zz/scale", {"replicas": 1})
        assert status == 404
        status, body = await call(runtime, "POST", "/admin/deployments/zz/rebuild-session", {})
        assert status == 404


async def test_secrets_are_masked_in_answers() -> None:
    spec = {
        "name": "remote",
        "runtime": "openai",
        "runtime_config": {
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "SOME_KEY_VARIABLE",
            "headers": {"Authorization": "Bearer sk-live-123", "X-Team": "a"},
        },
    }
    async with serve(sections={"auth": {"secret_env_allow": ["SOME_KEY_VARIABLE"]}}) as runtime:
        status, view = await call(runtime, "POST", "/admin/deployments", spec)
        assert status == 201, view
        for path in ("/admin/deployments/remote", "/admin/deployments"):
            status, answer = await call(runtime, "GET", path)
            assert status == 200 and "sk-live-123" not in str(answer)
        config = view["spec"]["runtime_config"]
        assert config["headers"] == {"Authorization": "***", "X-Team": "***"}
        assert config["api_key_env"] == "SOME_KEY_VARIABLE"  # where the key is, not the key


def remote_spec(name: str, **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "runtime": "openai",
        "runtime_config": {"base_url": "http://127.0.0.1:9/v1", **config},
    }


async def test_the_admin_api_names_only_allowed_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever reaches the admin API chooses ``base_url``: it may not make the server send an
    arbitrary variable or file there. The config file (the operator) may name any."""
    key_file = tmp_path / "operator-key"
    key_file.write_text("sk-operator\n")
    monkeypatch.setenv("OPERATOR_ONLY_VARIABLE", "sk-operator")
    operator = [
        remote_spec("by-env", api_key_env="OPERATOR_ONLY_VARIABLE"),
        remote_spec("by-file", api_key_file=str(key_file)),
    ]
    sections = {"auth": {"secret_env_allow": ["TEAM_KEY"]}}
    async with serve(*operator, sections=sections) as runtime:
        for name in ("by-env", "by-file"):  # the config file's own: accepted as they are
            status, view = await call(runtime, "GET", f"/admin/deployments/{name}")
            assert status == 200 and view["source"] == "config"
        refused = [
            ("api_key_env", "HOME"),
            ("api_key_env", "INFERENCE_RUNTIME_ADMIN_KEY"),
            ("api_key_file", "/etc/passwd"),
            ("client_key", "/etc/shadow"),
        ]
        for field, value in refused:
            spec = remote_spec("stolen", **{field: value})
            for method, path in (("POST", "/admin/deployments"), ("PUT", "/admin/deployments/x")):
                status, body = await call(runtime, method, path, {**spec, "name": "x"})
                assert status == 403, body
                assert body["error"]["param"] == f"runtime_config.{field}"
        # changing a config-file deployment through the API is held to the same rule
        changed = remote_spec("by-env", api_key_env="HOME")
        status, body = await call(runtime, "PUT", "/admin/deployments/by-env", changed)
        assert status == 403 and body["error"]["type"] == "permission_error"
        status, body = await call(runtime, "GET", "/admin/deployments")
        assert [v["name"] for v in body["data"]] == ["by-env", "by-file"]
        allowed = [
            remote_spec("team", api_key_env="TEAM_KEY"),
            remote_spec("same-env", api_key_env="OPERATOR_ONLY_VARIABLE"),
            remote_spec("same-file", api_key_file=str(key_file)),
        ]
        for spec in allowed:
            status, view = await call(runtime, "POST", "/admin/deployments", spec)
            assert status == 201, view


async def test_a_replica_that_cannot_start_logs_and_shows_its_whole_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sections = {
        "auth": {"secret_env_allow": ["A_VARIABLE_NOBODY_SET"]},
        "manager": {"replace_backoff_s": 0.01},
    }
    async with serve(sections=sections) as runtime:
        spec = remote_spec("broken", api_key_env="A_VARIABLE_NOBODY_SET")
        status, view = await call(runtime, "POST", "/admin/deployments", spec)
        assert status == 201, view
        report = await eventually(
            runtime,
            "/admin/status",
            lambda r: r["deployments"] and r["deployments"][0]["last_errors"],
        )
        (reason,) = report["deployments"][0]["last_errors"].values()
        assert "A_VARIABLE_NOBODY_SET is not set" in reason and len(reason) > 60
    failed = [
        r for r in caplog.records if r.levelname == "ERROR" and "broken#0 failed" in r.message
    ]
    assert failed and "A_VARIABLE_NOBODY_SET is not set" in failed[0].message


SPECS = [
    {
        "name": "words",
        "runtime": "fake",
        "runtime_config": {"token_latency_ms": 1, "output_tokens": 4, "max_context": 512},
        "serving": {"max_tokens": 64, "max_batched_tokens": 1024},
    },
    {
        "name": "up",
        "runtime": "openai",
        "runtime_config": {
            "base_url": "http://127.0.0.1:9/v1",
            "headers": {"X-Api-Token": "tok_live_abcdef123456"},
            "retry": {"max_retries": 0},
        },
        "serving": {"max_tokens": 32},
    },
    {
        "name": "claude",
        "runtime": "anthropic",
        "runtime_config": {"base_url": "http://127.0.0.1:9/v1", "max_concurrent": 4},
    },
]


@pytest.mark.parametrize("spec", SPECS, ids=[s["runtime"] for s in SPECS])
async def test_a_spec_read_back_and_put_again_changes_nothing(spec: dict[str, Any]) -> None:
    async with serve() as runtime:
        status, created = await call(runtime, "POST", "/admin/deployments", spec)
        assert status == 201, created
        serving = created["spec"]["serving"]
        assert serving == {**serving, **spec.get("serving", {})}  # numbers read as themselves
        path = f"/admin/deployments/{spec['name']}"
        _, read = await call(runtime, "GET", path)
        assert "tok_live_abcdef123456" not in str(read)
        status, again = await call(runtime, "PUT", path, read["spec"])
        assert status == 200, again
        assert again["revision"] == created["revision"] == 1  # the same spec: no new revision
        assert again["spec"] == read["spec"]


async def test_api_keys_admin_key_and_per_key_rate_limits() -> None:
    auth = {**AUTH, "requests_per_minute": 3}
    async with serve(fake(), sections={"auth": auth}) as runtime:
        await wait_healthy(runtime, "fake", 1)
        with pytest.raises(openai.AuthenticationError):
            await client(runtime, api_key="wrong").models.list()
        status, body = await call(runtime, "GET", "/v1/models")
        assert status == 401 and body["error"]["type"] == "authentication_error"
        status, _ = await call(runtime, "GET", "/healthz")
        assert status == 200  # probes stay open
        one = client(runtime, api_key="key-one")
        for _ in range(3):
            await one.models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            await one.models.list()
        assert int(limited.value.response.headers["Retry-After"]) >= 1
        await client(runtime, api_key="key-two").models.list()  # limits are per key
        # the admin API takes the admin key only: a valid API key is known, but not for this
        status, body = await call(
            runtime, "GET", "/admin/deployments", headers={"Authorization": "Bearer key-two"}
        )
        assert status == 403 and body["error"]["type"] == "permission_error"
        status, body = await call(
            runtime, "GET", "/admin/deployments", headers={"Authorization": "Bearer nope"}
        )
        assert status == 401 and body["error"]["type"] == "authentication_error"
        status, _ = await call(runtime, "GET", "/admin/deployments", headers=ADMIN)
        assert status == 200


@pytest.mark.parametrize("path", ["/v1/models", "/admin/deployments"])
async def test_wrong_keys_from_one_client_are_slowed(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of wrong keys, then 429 with Retry-After for that client, whatever key it sends
    (a right guess must not get through at full speed); another client is not slowed."""
    monkeypatch.setattr(key_throttle, "REFILL_S", 3600.0)  # no try comes back during the test
    async with serve(sections={"auth": AUTH}) as runtime:
        wrong = {"Authorization": "Bearer guess"}
        right = ADMIN if path.startswith("/admin") else {"Authorization": "Bearer key-one"}
        statuses = [(await call(runtime, "GET", path, headers=wrong))[0] for _ in range(12)]
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429], statuses
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url(runtime) + path, headers=right) as response,
        ):
            assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
            assert (await response.json())["error"]["type"] == "rate_limit_error"
        # another client (another loopback address) with the right key is served as before
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(base_url(runtime) + path, headers=right) as response,
        ):
            assert response.status == 200


async def test_admin_api_is_closed_without_an_admin_key_when_api_keys_exist() -> None:
    async with serve(sections={"auth": {"api_keys": ["k"]}}) as runtime:
        status, body = await call(
            runtime, "GET", "/admin/deployments", headers={"Authorization": "Bearer k"}
        )
        assert status == 403 and "admin key" in body["error"]["message"]


async def test_keys_from_a_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nfile-key\n")
    monkeypatch.setenv("TEST_ADMIN_KEY", "env-admin")
    auth = {"api_keys_file": str(keys), "admin_key_env": "TEST_ADMIN_KEY"}
    async with serve(sections={"auth": auth}) as runtime:
        await client(runtime, api_key="file-key").models.list()
        status, _ = await call(
            runtime, "GET", "/admin/status", headers={"Authorization": "Bearer env-admin"}
        )
        assert status == 200


async def test_non_loopback_without_keys_is_refused() -> None:
    config = RuntimeConfig.from_dict({"gateway": {"host": "0.0.0.0", "port": 0}})
    runtime = Runtime(config)
    with pytest.raises(ValueError, match=r"refusing to serve on 0\.0\.0\.0"):
        await runtime.start()
    await runtime.stop()
    allowed = RuntimeConfig.from_dict(
        {"gateway": {"host": "0.0.0.0", "port": 0}, "auth": {"allow_unauthenticated": True}}
    )
    runtime = Runtime(allowed)
    await runtime.start()
    await runtime.stop()


async def test_request_limits() -> None:
    capped = fake(serving={"max_tokens": 5}, output_tokens=100)
    async with serve(capped, max_messages=3) as runtime:
        await wait_healthy(runtime, "fake", 1)
        api = client(runtime)
        with pytest.raises(openai.BadRequestError, match="messages"):
            await api.chat.completions.create(model="fake", messages=USER * 4)
        with pytest.raises(openai.BadRequestError, match="max_tokens"):
            await api.chat.completions.create(model="fake", messages=USER, max_tokens=6)
        reply = await api.chat.completions.create(model="fake", messages=USER)
        assert reply.usage is not None and reply.usage.completion_tokens == 5  # the cap


async def test_rebuild_session_rotates_the_key_without_dropping_requests(
    tmp_path: Path,
) -> None:
    from inference_runtime.testing.mock_upstream import MockUpstream

    key_file = tmp_path / "key"
    key_file.write_text("sk-old\n")
    async with MockUpstream(api_keys=("sk-old", "sk-new"), token_delay_s=0.02) as upstream:
        spec = {
            "name": "gpt",
            "runtime": "openai",
            "runtime_config": {"base_url": upstream.url, "api_key_file": str(key_file)},
        }
        async with serve(spec) as runtime:
            await wait_healthy(runtime, "gpt", 1)
            api = client(runtime)
            in_flight = asyncio.ensure_future(
                api.chat.completions.create(model="gpt", messages=USER)
            )
            await asyncio.sleep(0.1)
            key_file.write_text("sk-new\n")
            status, body = await call(runtime, "POST", "/admin/deployments/gpt/rebuild-session")
            assert status == 200 and body["replicas"] == {"gpt#0": True}
            reply = await in_flight  # the request in flight kept its key and finished
            assert reply.choices[0].message.content
            await api.chat.completions.create(model="gpt", messages=USER)
            keys = [r.headers["Authorization"] for r in upstream.requests]
            assert keys == ["Bearer sk-old", "Bearer sk-new"]
            status, body = await call(runtime, "GET", "/admin/deployments/gpt")
            events = [e["event"] for e in body["replica_list"][0]["history"]]
            assert "session_rebuilt" in events and "sk-new" not in str(body)
            # a key source that breaks is the rebuild's 409, not the manager's crash: the
            # session keeps its key and every deployment keeps serving
            for broken in ("sk-newer\nsecond line\n", None):
                if broken is None:
                    key_file.unlink()
                else:
                    key_file.write_text(broken)
                status, body = await call(runtime, "POST", "/admin/deployments/gpt/rebuild-session")
                assert status == 409, body
                assert "keeps its current key" in body["error"]["message"]
                assert "sk-newer" not in str(body)
            reply = await api.chat.completions.create(model="gpt", messages=USER)
            assert reply.choices[0].message.content
            assert upstream.requests[-1].headers["Authorization"] == "Bearer sk-new"


async def test_whole_numbers_written_with_a_fraction_are_integers() -> None:
    # JSON has one number type; the OpenAPI document's `integer` takes 1.0
    async with serve() as runtime:
        spec = {"name": "w", "runtime": "fake", "replicas": 1.0, "serving": {"max_tokens": 8.0}}
        status, body = await call(runtime, "POST", "/admin/deployments", spec)
        assert status == 201, body
        assert body["spec"]["replicas"] == 1 and body["spec"]["serving"]["max_tokens"] == 8
        status, body = await call(runtime, "POST", "/admin/deployments/w/scale", {"replicas": 2.0})
        assert status == 200 and body["spec"]["replicas"] == 2, body
        for bad in ({"replicas": 1.5}, {"replicas": -1.0}):
            status, body = await call(runtime, "POST", "/admin/deployments/w/scale", bad)
            assert status == 400 and body["error"]["param"] == "replicas", body
        status, body = await call(
            runtime, "POST", "/admin/deployments", {**spec, "name": "x", "replicas": 1.5}
        )
        assert status == 400 and "replicas" in body["error"]["message"], body
