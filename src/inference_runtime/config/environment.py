"""Every environment variable the runtime reads, read here and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from inference_runtime.types import Secret


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    config: str | None = None
    """INFERENCE_RUNTIME_CONFIG: the config file used when ``serve`` gets no ``--config``."""
    host: str | None = None
    """INFERENCE_RUNTIME_HOST: overrides ``gateway.host``."""
    port: int | None = None
    """INFERENCE_RUNTIME_PORT: overrides ``gateway.port``."""
    log_level: str = "INFO"
    """INFERENCE_RUNTIME_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    cache_dir: str = ""
    """INFERENCE_RUNTIME_CACHE_DIR, else $XDG_CACHE_HOME/inference-runtime, else
    ~/.cache/inference-runtime: where converted models are kept."""
    data_dir: str = ""
    """INFERENCE_RUNTIME_DATA_DIR, else $XDG_DATA_HOME/inference-runtime, else
    ~/.local/share/inference-runtime: where the state database lives by default."""
    url: str | None = None
    """INFERENCE_RUNTIME_URL: the server the CLI's admin verbs talk to."""
    admin_key: Secret = Secret("")
    """INFERENCE_RUNTIME_ADMIN_KEY: the admin key the CLI's admin verbs send."""
    event_loop: str | None = None
    """INFERENCE_RUNTIME_EVENT_LOOP: overrides ``gateway.event_loop`` (auto, asyncio, uvloop)."""


class ProxyEnvironment(msgspec.Struct, frozen=True, kw_only=True):
    """The proxy variables, as curl and httpx read them (lower case first, then upper)."""

    http: str | None = None
    """http_proxy / HTTP_PROXY: the proxy of ``http://`` upstreams."""
    https: str | None = None
    """https_proxy / HTTPS_PROXY: the proxy of ``https://`` upstreams (a CONNECT tunnel)."""
    all: str | None = None
    """all_proxy / ALL_PROXY: the proxy of either scheme when its own variable is unset."""
    no_proxy: str = ""
    """no_proxy / NO_PROXY: hosts, domains (``.corp.example``), IPs, CIDR blocks, each with
    an optional ``:port``, comma-separated, reached directly; ``*``: every host."""


def read_proxy_environment(environ: Mapping[str, str] | None = None) -> ProxyEnvironment:
    env = os.environ if environ is None else environ

    def first(name: str) -> str | None:
        return (env.get(name.lower()) or env.get(name.upper()) or "").strip() or None

    return ProxyEnvironment(
        http=first("http_proxy"),
        https=first("https_proxy"),
        all=first("all_proxy"),
        no_proxy=first("no_proxy") or "",
    )


def _variable(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"the environment variable {name} is not set")
    if not value.strip():
        raise ValueError(f"the environment variable {name} is empty")
    return value


def _file(path: str) -> str:
    try:
        with open(os.path.expanduser(path)) as handle:
            return handle.read()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None


def read_secret(*, env: str | None = None, file: str | None = None) -> Secret:
    """An API key from the environment variable ``env`` or the file ``file`` (read each time:
    a rotated key is picked up by the next call). Errors name where it was looked for, never
    the value."""
    try:
        if env:
            return Secret(_variable(env).strip())
        value = _file(file).strip() if file else ""
    except ValueError as error:
        raise ValueError(f"{'api_key_env' if env else 'api_key_file'}: {error}") from None
    if file:
        if not value:
            raise ValueError(f"api_key_file: {file} is empty")
        return Secret(value)
    return Secret("")


def read_keys(
    *, inline: tuple[str, ...] = (), env: str | None = None, file: str | None = None
) -> tuple[Secret, ...]:
    """Keys from the config, an environment variable (comma-separated) and a file (one per
    line, ``#`` comments); a source named but missing or empty is an error."""
    keys = [k.strip() for k in inline if k.strip()]
    if env:
        keys += [k.strip() for k in _variable(env).split(",") if k.strip()]
    if file:
        found = [ln.split("#", 1)[0].strip() for ln in _file(file).splitlines()]
        if not any(found):
            raise ValueError(f"{file} holds no key")
        keys += [k for k in found if k]
    return tuple(Secret(k) for k in dict.fromkeys(keys))


def read_environment(environ: Mapping[str, str] | None = None) -> Environment:
    env = os.environ if environ is None else environ
    port = env.get("INFERENCE_RUNTIME_PORT")
    if port is not None and not port.isdigit():
        raise ValueError(f"INFERENCE_RUNTIME_PORT={port!r} is not a port number")
    return Environment(
        config=env.get("INFERENCE_RUNTIME_CONFIG") or None,
        host=env.get("INFERENCE_RUNTIME_HOST") or None,
        port=int(port) if port is not None else None,
        log_level=(env.get("INFERENCE_RUNTIME_LOG_LEVEL") or "INFO").upper(),
        cache_dir=env.get("INFERENCE_RUNTIME_CACHE_DIR")
        or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "inference-runtime",
        ),
        data_dir=env.get("INFERENCE_RUNTIME_DATA_DIR")
        or os.path.join(
            env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share"),
            "inference-runtime",
        ),
        url=env.get("INFERENCE_RUNTIME_URL") or None,
        admin_key=Secret(env.get("INFERENCE_RUNTIME_ADMIN_KEY", "").strip()),
        event_loop=env.get("INFERENCE_RUNTIME_EVENT_LOOP") or None,
    )
