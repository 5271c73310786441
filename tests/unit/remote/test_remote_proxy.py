"""Which proxy an origin goes through: the environment's variables as curl reads them, NO_PROXY's
forms, a deployment's own ``proxy`` (or ``null``), credentials that never print; and the keep-alive
idle time a deployment configures."""

from __future__ import annotations

import base64

import msgspec
import pytest

from inference_runtime.config.environment import ProxyEnvironment, read_proxy_environment
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.proxy import choose_proxies, parse_proxy
from inference_runtime.remote.session import RemoteSession
from inference_runtime.types import Deployment


def test_the_environment_is_read_lower_case_first_then_upper() -> None:
    environ = {
        "HTTPS_PROXY": "http://upper:3128",
        "https_proxy": "http://lower:3128",
        "HTTP_PROXY": "http://plain:8080",
        "NO_PROXY": "internal.example",
    }
    found = read_proxy_environment(environ)
    assert found == ProxyEnvironment(
        http="http://plain:8080", https="http://lower:3128", no_proxy="internal.example"
    )
    assert read_proxy_environment({}) == ProxyEnvironment()


def test_each_scheme_takes_its_own_variable_and_all_proxy_fills_in() -> None:
    choice = choose_proxies(None, ProxyEnvironment(https="secure:3128", all="http://fallback:8080"))
    https = choice.for_origin("https", "api.openai.com", 443)
    http = choice.for_origin("http", "vllm.example", 8000)
    assert https is not None and https.address == "secure:3128"
    assert http is not None and http.address == "fallback:8080"
    assert choose_proxies(None, ProxyEnvironment()).for_origin("https", "a.b", 443) is None


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("*", "anything.example", 443, True),
        ("corp.example", "corp.example", 443, True),
        ("corp.example", "api.corp.example", 443, True),  # a domain covers its subdomains
        (".corp.example", "api.corp.example", 443, True),
        ("*.corp.example", "api.corp.example", 443, True),
        ("corp.example", "notcorp.example", 443, False),  # a suffix, not a substring
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("127.0.0.1:8000", "127.0.0.1", 8000, True),
        ("127.0.0.1:8000", "127.0.0.1", 8001, False),  # a port names that port only
        ("[::1]:8000", "::1", 8000, True),
        ("::1", "::1", 443, True),
        (" a.example , B.EXAMPLE ", "b.example", 443, True),
        ("", "api.openai.com", 443, False),
    ],
)
def test_no_proxy_forms(no_proxy: str, host: str, port: int, direct: bool) -> None:
    choice = choose_proxies(None, ProxyEnvironment(https="http://proxy:3128", no_proxy=no_proxy))
    assert (choice.for_origin("https", host, port) is None) is direct


def test_credentials_become_a_basic_header_and_never_print() -> None:
    proxy = parse_proxy("http://al%40ce:s3cr%3At-pass@proxy.corp:3128", field_name="proxy")
    token = base64.b64encode(b"al@ce:s3cr:t-pass").decode()
    assert proxy.authorization == f"Basic {token}"
    assert proxy.header() == f"Proxy-Authorization: Basic {token}\r\n"
    assert "s3cr:t-pass" in proxy.secrets and token in proxy.secrets
    assert "s3cr" not in repr(proxy) and token not in repr(proxy)
    assert proxy.address == "proxy.corp:3128"
    bare = parse_proxy("proxy.corp:8080", field_name="proxy")  # as curl takes it
    assert (bare.address, bare.authorization) == ("proxy.corp:8080", None)


@pytest.mark.parametrize("url", ["https://proxy:3128", "socks5://u:secretpw@proxy:1080", "http://"])
def test_an_unsupported_proxy_is_refused_naming_the_field_not_the_url(url: str) -> None:
    with pytest.raises(ValueError, match=r"^runtime_config\.proxy: ") as caught:
        RemoteConfig(base_url="http://127.0.0.1:1/v1", proxy=url)
    assert "secretpw" not in str(caught.value)


def test_a_deployments_proxy_wins_and_null_turns_proxies_off() -> None:
    own = choose_proxies("http://own:3128", None)
    for scheme in ("http", "https"):
        chosen = own.for_origin(scheme, "api.openai.com", 443)
        assert chosen is not None and chosen.address == "own:3128"
    assert choose_proxies(None, None).for_origin("https", "api.openai.com", 443) is None


def _session(**runtime_config: object) -> RemoteSession:
    deployment = Deployment.from_dict(
        {
            "name": "gpt",
            "runtime": "openai",
            "runtime_config": {"base_url": "http://127.0.0.1:1/v1", **runtime_config},
        }
    )
    return RemoteSession(deployment)


async def test_the_session_reads_the_environment_unless_the_deployment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://user:env-password-1@envproxy:3128")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    for config, expected in (({}, "envproxy:3128"), ({"proxy": None}, None)):
        session = _session(**config)
        await session.load()
        assert session.http is not None
        chosen = session.http._proxies.for_origin("http", "127.0.0.1", 1)
        assert (chosen.address if chosen else None) == expected
        if expected:  # the proxy's password is one of the session's secrets
            assert session.redactor("said env-password-1") == "said [redacted]"
        await session.close()


async def test_keepalive_idle_time_is_configurable_and_below_five_seconds() -> None:
    assert RemoteConfig().keepalive_idle_s < 5.0
    session = _session(keepalive_idle_s=1.5)
    await session.load()
    assert session.http is not None and session.http.keepalive_s == 1.5
    await session.close()
    with pytest.raises(msgspec.ValidationError, match="keepalive_idle_s"):
        msgspec.convert({"keepalive_idle_s": "soon"}, RemoteConfig)
    with pytest.raises(ValueError, match="keepalive_idle_s"):
        RemoteConfig(keepalive_idle_s=0)


def test_unknown_keys_are_still_refused_and_the_new_ones_decode() -> None:
    decoded = msgspec.convert(
        {
            "proxy": None,
            "ca_bundle": "/etc/ssl/corp.pem",
            "client_cert": "/etc/ssl/me.pem",
            "client_key": "/etc/ssl/me.key",
            "keepalive_idle_s": 3,
        },
        RemoteConfig,
    )
    assert decoded.proxy is None and decoded.client_key == "/etc/ssl/me.key"
    assert msgspec.convert({}, RemoteConfig).proxy is msgspec.UNSET
    with pytest.raises(msgspec.ValidationError, match="proxy_url"):
        msgspec.convert({"proxy_url": "http://p:1"}, RemoteConfig)
    with pytest.raises(ValueError, match="client_key: set client_cert too"):
        RemoteConfig(client_key="/etc/ssl/me.key")
