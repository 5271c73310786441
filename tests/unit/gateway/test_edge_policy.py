"""The edge's per-request checks on their own: which Host, Origin and Content-Type a request
may carry, for a loopback server, a public one, and one with names configured."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from inference_runtime.config import GatewayConfig
from inference_runtime.errors import PermissionDenied, UnsupportedMediaType
from inference_runtime.gateway.edge import EdgePolicy


def request(method: str = "GET", *, body: bool = False, **headers: str) -> web.Request:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    payload: Any = mock.Mock() if body else None  # any payload but the empty one: a body
    if payload is None:
        return make_mocked_request(method, "/v1/chat/completions", headers=named)
    return make_mocked_request(method, "/v1/chat/completions", headers=named, payload=payload)


LOOPBACK = EdgePolicy(GatewayConfig(host="127.0.0.1", port=8080))
PUBLIC = EdgePolicy(GatewayConfig(host="0.0.0.0"))
NAMED = EdgePolicy(
    GatewayConfig(
        host="0.0.0.0", allowed_hosts=("api.example",), allowed_origins=("https://app.example",)
    )
)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8080",
        "127.0.0.1",
        "localhost:8080",
        "LOCALHOST",
        "[::1]:8080",
        "a.localhost",
        "10.0.0.5:8080",  # an address: never a rebinding page's Host
    ],
)
def test_a_loopback_server_answers_loopback_names_and_addresses(host: str) -> None:
    LOOPBACK.check(request(Host=host))


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil", ""])
def test_a_loopback_server_refuses_other_hosts(host: str) -> None:
    with pytest.raises(PermissionDenied, match="Host"):
        LOOPBACK.check(request(Host=host))


def test_a_public_server_answers_any_host_unless_names_are_given() -> None:
    PUBLIC.check(request(Host="anything.example"))
    NAMED.check(request(Host="api.example:443"))
    NAMED.check(request(Host="localhost:8080"))
    NAMED.check(request(Host="10.1.2.3:8080"))  # a probe that addresses the pod by IP
    with pytest.raises(PermissionDenied):
        NAMED.check(request(Host="other.example"))


@pytest.mark.parametrize(
    ("policy", "origin", "host"),
    [
        (LOOPBACK, "http://127.0.0.1:8080", "127.0.0.1:8080"),  # its own page
        (LOOPBACK, "http://localhost:3000", "127.0.0.1:8080"),  # a loopback page
        (PUBLIC, "https://api.example", "api.example"),  # its own page
        (NAMED, "https://app.example/", "api.example"),  # listed
    ],
)
def test_accepted_origins(policy: EdgePolicy, origin: str, host: str) -> None:
    policy.check(request(Host=host, Origin=origin))


@pytest.mark.parametrize(
    ("policy", "origin", "host"),
    [
        (LOOPBACK, "https://evil.example", "127.0.0.1:8080"),
        (LOOPBACK, "null", "127.0.0.1:8080"),
        (LOOPBACK, "file://", "127.0.0.1:8080"),
        (PUBLIC, "http://localhost:3000", "api.example"),  # loopback pages only for loopback
        (NAMED, "https://app.example.evil", "api.example"),
    ],
)
def test_refused_origins(policy: EdgePolicy, origin: str, host: str) -> None:
    with pytest.raises(PermissionDenied, match="Origin"):
        policy.check(request(Host=host, Origin=origin))


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data", "", "json"])
def test_a_body_that_is_not_json_is_refused(method: str, content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        LOOPBACK.check(request(method, body=True, Host="127.0.0.1", Content_Type=content_type))


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_a_json_body_passes(content_type: str) -> None:
    LOOPBACK.check(request("POST", body=True, Host="127.0.0.1", Content_Type=content_type))


def test_requests_without_a_body_need_no_content_type() -> None:
    LOOPBACK.check(request("POST", Host="127.0.0.1"))
    LOOPBACK.check(request("DELETE", body=True, Host="127.0.0.1"))
