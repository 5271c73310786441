"""Remote deployments behind a corporate proxy: the environment's proxy variables (curl's
names, lower and upper case), a deployment's own ``proxy`` (or ``null``), CONNECT tunnels for
https with a private CA bundle and a client certificate, absolute-form http, NO_PROXY, and the
proxy's credentials sent as ``Proxy-Authorization`` and never logged."""

from __future__ import annotations

import base64
import logging
import ssl
from pathlib import Path
from typing import Any

import openai
import pytest

from inference_runtime.testing.mock_upstream import MockUpstream
from support.remote import LoopbackProxy, remote
from support.runtime import client, serve, wait_healthy

USER = [{"role": "user", "content": "hello proxy"}]
PASSWORD = "p@ss:w0rd-Zq81xK"
"""With the characters a URL must escape (``@``, ``:``)."""
USERINFO = "alice:p%40ss%3Aw0rd-Zq81xK"
BASIC = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOCK_KEY", "sk-proxied")


async def _chat(runtime: Any, model: str = "gpt", *, stream: bool = False) -> str:
    # the test's own client must not take the proxy variables meant for the runtime
    api = client(runtime, http_client=openai.DefaultAsyncHttpxClient(trust_env=False))
    if stream:
        words = []
        async for chunk in await api.chat.completions.create(
            model=model, messages=USER, max_tokens=4, stream=True
        ):
            words += [c.delta.content or "" for c in chunk.choices]
        return "".join(words)
    reply = await api.chat.completions.create(model=model, messages=USER, max_tokens=4)
    return reply.choices[0].message.content or ""


async def test_http_goes_through_the_environments_proxy_with_its_credentials(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        MockUpstream(url_host="upstream.test") as upstream,  # only the proxy resolves it
        LoopbackProxy(authorization=BASIC, resolve={"upstream.test": "127.0.0.1"}) as proxy,
    ):
        monkeypatch.setenv("HTTP_PROXY", proxy.url(USERINFO))
        async with serve(remote(upstream)) as runtime:
            await wait_healthy(runtime, "gpt", 1)
            assert await _chat(runtime)
            assert await _chat(runtime, stream=True)
        target = f"http://upstream.test:{upstream.port}/v1/chat/completions"
        assert proxy.seen[0] == ("POST", target, BASIC)  # absolute form, with the credentials
        assert len(proxy.seen) == 2
        assert all("proxy-authorization" not in r.headers for r in upstream.requests)
    assert PASSWORD not in caplog.text
    assert BASIC.split()[1] not in caplog.text


def _tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, dict[str, str]]:
    """An upstream's context for ``upstream.test`` asking for a client certificate, and the
    runtime_config files that let a client in: the CA bundle and the client's certificate."""
    import trustme

    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("upstream.test").configure_cert(server)
    server.verify_mode = ssl.CERT_REQUIRED
    authority.configure_trust(server)
    ca = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    client_cert = authority.issue_cert("inference-runtime@example.com")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    for blob in client_cert.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    client_cert.private_key_pem.write_to_path(str(key))
    return server, {"ca_bundle": str(ca), "client_cert": str(cert), "client_key": str(key)}


async def test_https_tunnels_through_the_deployments_own_proxy_with_mutual_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server_context, files = _tls_files(tmp_path)
    async with (
        MockUpstream(ssl_context=server_context, url_host="upstream.test") as upstream,
        LoopbackProxy(authorization=BASIC, resolve={"upstream.test": "127.0.0.1"}) as proxy,
    ):
        monkeypatch.setenv("https_proxy", "http://127.0.0.1:1")  # the deployment's own wins
        deployment = remote(upstream, proxy=proxy.url(USERINFO), **files)
        async with serve(deployment) as runtime:
            await wait_healthy(runtime, "gpt", 1)
            assert await _chat(runtime)
            assert await _chat(runtime, stream=True)
        tunnel = f"upstream.test:{upstream.port}"
        assert proxy.seen == [("CONNECT", tunnel, BASIC)]  # one tunnel, kept alive for both
        assert len(upstream.requests) == 2
    assert PASSWORD not in caplog.text
    assert BASIC.split()[1] not in caplog.text


async def test_no_proxy_and_a_null_proxy_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    async with (
        MockUpstream() as bypassed,
        MockUpstream() as other,
        LoopbackProxy() as proxy,
    ):
        monkeypatch.setenv("http_proxy", proxy.url())
        monkeypatch.setenv("NO_PROXY", f"localhost, .corp.example,127.0.0.1:{bypassed.port}")
        deployments = [
            remote(bypassed, "listed"),  # its host and port are in NO_PROXY
            remote(other, "off", proxy=None),  # its own setting: never a proxy
            remote(other, "proxied"),  # the same host on another port: proxied
        ]
        async with serve(*deployments) as runtime:
            for deployment in deployments:
                await wait_healthy(runtime, deployment["name"], 1)
            assert await _chat(runtime, "listed")
            assert await _chat(runtime, "off")
            assert proxy.seen == []
            assert await _chat(runtime, "proxied")
        assert [method for method, _, _ in proxy.seen] == ["POST"]
        assert len(bypassed.requests) == 1 and len(other.requests) == 2


@pytest.mark.parametrize("tls", [False, True])
async def test_a_proxy_that_refuses_the_credentials_is_a_502_not_the_password(
    tls: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_context, files = _tls_files(tmp_path) if tls else (None, {})
    async with (
        MockUpstream(ssl_context=server_context, url_host="upstream.test") as upstream,
        LoopbackProxy(authorization="Basic other", resolve={"upstream.test": "127.0.0.1"}) as proxy,
    ):
        monkeypatch.setenv("HTTPS_PROXY", proxy.url(USERINFO))
        monkeypatch.setenv("ALL_PROXY", proxy.url(USERINFO))
        deployment = remote(upstream, retry={"max_retries": 0}, **files)
        async with serve(deployment) as runtime:
            await wait_healthy(runtime, "gpt", 1)
            with pytest.raises(openai.APIStatusError) as refused:
                await _chat(runtime)
        assert refused.value.status_code == 502
        text = refused.value.response.text
        assert "proxy" in text and "407" in text
        assert PASSWORD not in text and "w0rd" not in text
