"""The standing fuzz suite: schemathesis over the live server's ``/openapi.json`` (chat,
completions, embeddings, admin), every check on. What it holds: the document says what the
server does (no schema-valid request refused for a reason the schema could have said, no
schema-violating one accepted, every status and header documented), no 5xx but a legitimate
503, every error in OpenAI's shape, and the server still serves a normal request after.

The server runs in a thread of its own (schemathesis calls it synchronously over HTTP), with
keys set so that the auth checks mean something, a fake deployment and a remote one over a
MockUpstream (for embeddings). The document is the server's own, with ``model`` narrowed to the
deployments served and admin specs to cheap fake ones: the fuzzing reaches the handlers instead
of a 404, and never starts real models.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.engine import events as engine_events
from schemathesis.specs.openapi.checks import positive_data_acceptance

from inference_runtime import Runtime
from inference_runtime.testing.mock_upstream import MockUpstream
from support.remote import remote
from support.runtime import fake, serve

API_KEY, ADMIN_KEY = "sk-fuzz-api", "sk-fuzz-admin"
MAX_EXAMPLES = int(os.environ.get("INFERENCE_RUNTIME_FUZZ_EXAMPLES", "25"))
"""Per operation and phase; set the variable for a deeper (then randomised) run."""
DETERMINISTIC = "INFERENCE_RUNTIME_FUZZ_EXAMPLES" not in os.environ
_BEYOND_A_SCHEMA = frozenset(
    {"unsupported_parameter", "context_length_exceeded", "over_replica_capacity",
     "conflicting_parameters"}
)  # fmt: skip
"""Codes of a 400 that no JSON Schema can foresee: what the deployment can do (a local
runtime reads no image; a prompt beyond its context; more choices than a replica of this
deployment holds), or two fields that must agree (``max_tokens``, ``max_completion_tokens``)."""


class _Server:
    """A Runtime (and its upstream) on a loop in a thread; stopped by ``close``."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.url = ""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        self.stop = asyncio.Event()
        try:
            upstream_server = MockUpstream(api_key="sk-upstream", record_requests=False)
            async with upstream_server as upstream:
                spec = remote(upstream, replicas=1)
                spec["runtime_config"]["api_key_env"] = "FUZZ_UPSTREAM_KEY"
                sections = {
                    "auth": {"api_keys": [API_KEY], "admin_key": ADMIN_KEY},
                    "storage": {"path": str(self.data / "state.db")},
                }
                async with serve(fake(output_tokens=3), spec, sections=sections) as runtime:
                    self.url = _url(runtime)
                    self.ready.set()
                    await self.stop.wait()
        except BaseException as error:
            self.error = error
            self.ready.set()
            raise

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(60), "the server did not start"
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)
        if not self.thread.is_alive():
            self.loop.close()


def _url(runtime: Runtime) -> str:
    assert runtime.address is not None
    host, port = runtime.address
    return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    with pytest.MonkeyPatch.context() as env:  # module-scoped: before the per-test data dir
        env.setenv("INFERENCE_RUNTIME_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        env.setenv("INFERENCE_RUNTIME_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        env.setenv("FUZZ_UPSTREAM_KEY", "sk-upstream")
        env.setenv("MOCK_KEY", "sk-upstream")
        live = _Server(tmp_path_factory.mktemp("state"))
        live.start()
        try:
            yield live
        finally:
            live.close()


def _narrowed(document: dict[str, Any], *, positive: bool) -> dict[str, Any]:
    """The served document, with ``model`` one of the deployments that serve each endpoint;
    for valid data also admin specs fake ones of at most two replicas under two names (what
    the fuzzing may create) and small embedding inputs. Invalid data is made from the document
    as served but for ``model``: a constraint only this test adds would be one the server is
    right not to enforce."""
    doc = copy.deepcopy(document)
    schemas = doc["components"]["schemas"]
    for name, model in (("ChatCompletionRequest", "fake"), ("CompletionRequest", "fake"),
                        ("EmbeddingRequest", "gpt")):  # fmt: skip
        schemas[name]["properties"]["model"] = {"type": "string", "enum": [model]}
    if not positive:
        return doc
    embedding = schemas["EmbeddingRequest"]["properties"]
    # the mock upstream makes vectors of the size asked: a valid 2**31 would be gigabytes
    embedding["dimensions"] = {"type": ["integer", "null"], "minimum": 1, "maximum": 64}
    for choice in embedding["input"]["oneOf"]:
        if choice["type"] == "array":
            choice["maxItems"] = 8
            if choice["items"]["type"] == "array":
                choice["items"]["maxItems"] = 8
    spec = schemas["Deployment"]["properties"]
    spec["runtime"] = {"type": "string", "enum": ["fake"]}
    spec["runtime_config"] = {"type": "object", "additionalProperties": False, "properties": {}}
    spec["replicas"] = {"type": "integer", "minimum": 0, "maximum": 2}
    spec["gpus"] = {"type": "integer", "enum": [0]}
    spec["gpu_memory_gib"] = {"type": "null"}
    spec["fallbacks"] = {"type": "array", "maxItems": 0}
    # one name in the body and the path alike (a PUT whose two names differ is a 400 that no
    # schema can state); never the deployments the other operations call: a fuzzed spec (no
    # replicas, queueing for minutes) would only make those requests wait
    spec["name"] = {"type": "string", "enum": ["fuzz-a"]}
    for route, path in doc["paths"].items():
        # the remote deployment has a session to rebuild; a local one has none (a 400)
        names = ["gpt"] if route.endswith("/rebuild-session") else ["fuzz-a"]
        for parameter in path.get("parameters", ()):
            if parameter["name"] == "name":
                parameter["schema"] = {"type": "string", "enum": names}
    return doc


def _schema(server: _Server, *, positive: bool) -> Any:
    document = requests.get(server.url + "/openapi.json", timeout=30).json()
    loaded = schemathesis.openapi.from_dict(_narrowed(document, positive=positive))
    loaded.config.update(base_url=server.url, workers=1, request_timeout=30)
    mode = (
        schemathesis.GenerationMode.POSITIVE if positive else schemathesis.GenerationMode.NEGATIVE
    )
    loaded.config.generation.update(
        modes=[mode], max_examples=MAX_EXAMPLES, deterministic=DETERMINISTIC
    )
    loaded.config.phases.update(phases=["examples", "coverage", "fuzzing", "stateful"])
    loaded.config.checks.update(excluded_check_names=["positive_data_acceptance"])
    return loaded


@schemathesis.auth()
class _Keys:
    """The admin key on ``/admin``, the API key elsewhere (the auth checks send wrong ones)."""

    def get(self, case: Any, context: Any) -> str:
        return ADMIN_KEY if case.path.startswith("/admin") else API_KEY

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.check
def errors_in_openai_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error a client sees is ``{"error": {message, type, param, code}}``; the only 5xx
    is a 503 (nothing can serve now), never a crash."""
    status = response.status_code
    assert status < 500 or status == 503, f"{status}: {response.text[:300]}"
    if status >= 400:
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str)
    return None


@schemathesis.check
def valid_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """``positive_data_acceptance``, but for a 400 whose code says what this deployment can do
    (see ``_BEYOND_A_SCHEMA``)."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:
        if response.status_code == 400 and _code(response) in _BEYOND_A_SCHEMA:
            return None
        raise


def _code(response: Any) -> str | None:
    try:
        code: str | None = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code


def _failures(events: Any) -> list[str]:
    """Each failed check of the run, once per (operation, check, title), with its curl."""
    found: dict[tuple[str, str, str], str] = {}
    for event in events:
        if isinstance(event, engine_events.FatalError):
            raise event.exception
        recorder = getattr(event, "recorder", None)
        for checks in recorder.checks.values() if recorder is not None else ():
            for check in checks:
                info = check.failure_info
                if info is None:
                    continue
                key = (recorder.label, check.name, info.failure.title)
                found.setdefault(key, f"{key}: {info.failure.message}\n{info.code_sample}")
        for failure in getattr(event, "failures", None) or ():
            found.setdefault(("run", "after", failure.title), str(failure.message))
    return list(found.values())


@pytest.mark.timeout(600)
@pytest.mark.parametrize("positive", [True, False], ids=["valid-data", "invalid-data"])
def test_the_server_does_what_its_openapi_document_says(server: _Server, positive: bool) -> None:
    run = schemathesis.engine.from_schema(_schema(server, positive=positive)).execute()
    failures = _failures(run)
    assert not failures, "\n\n".join(failures)


def test_a_normal_request_is_served_after_the_fuzzing(server: _Server) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "fake", "messages": [{"role": "user", "content": "still there?"}]}
    reply = requests.post(
        server.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
    embedding = requests.post(
        server.url + "/v1/embeddings", json={"model": "gpt", "input": "x"}, headers=headers,
        timeout=30,
    )  # fmt: skip
    assert embedding.status_code == 200, embedding.text
