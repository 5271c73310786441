"""``HttpClient`` over TLS: verified against the trusted authorities, and HTTP/1.1 asked for
by ALPN (HTTP/2 was measured slower, ``bench/http2.py``), never misread."""

from __future__ import annotations

import pytest

from inference_runtime.remote import http_client
from inference_runtime.remote.http_client import HttpClient, HttpConnectionError
from support.raw_http import client, ok, post, reply, tls_serving, trusting


async def test_https_is_verified_against_the_trusted_authorities() -> None:
    async with tls_serving(reply(ok(b"secret"))) as (raw, base, authority):
        url = base + "/v1/embeddings"
        with pytest.raises(HttpConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(client(), url)  # the system's authorities do not know this one
        context = trusting(authority)
        http = HttpClient(max_connections=1, connect_timeout_s=2, ssl_context=context)
        assert await post(http, url) == (200, b"secret")
        assert raw.requests[0].startswith(b"POST /v1/embeddings HTTP/1.1\r\n")
        await http.close()


async def test_a_server_that_picks_http2_by_alpn_is_refused_not_misread() -> None:
    # the server prefers h2, as providers do
    async with tls_serving(reply(ok(b"one")), alpn=["h2", "http/1.1"]) as (_, base, authority):
        offers_h2 = trusting(authority, ["h2", "http/1.1"])
        http = HttpClient(max_connections=1, connect_timeout_s=2, ssl_context=offers_h2)
        with pytest.raises(HttpConnectionError, match="chose h2"):
            await post(http, base + "/v1/x")
        assert http.statistics().open == 0
        offers_h1 = trusting(authority, ["http/1.1"])
        http = HttpClient(max_connections=1, connect_timeout_s=2, ssl_context=offers_h1)
        assert await post(http, base + "/v1/x") == (200, b"one")
        await http.close()


async def test_the_default_tls_context_asks_for_http1_so_an_h2_server_speaks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with tls_serving(reply(ok(b"one")), alpn=["h2", "http/1.1"]) as (raw, base, authority):
        # the client's own default context, made afresh and trusting the test's authority too
        monkeypatch.setattr(http_client, "_default_tls", None)
        authority.configure_trust(http_client._default_context())
        http = client()
        assert await post(http, base + "/v1/x") == (200, b"one")
        assert raw.alpn == ["http/1.1"]  # asked for, so chosen over the server's h2
        await http.close()
