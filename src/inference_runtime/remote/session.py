"""``RemoteSession``: the pooled HTTP client and the credential of one remote replica.

It stands where a local replica has its model runner, under the same two-tier supervision:
``load`` opens the connection pool and reads the key, ``rebuild`` does both again, ``close``
closes the pool. A key that stops working (401) or is rotated by an operator is re-read with
``refresh_key`` without dropping the requests in flight.
"""

from __future__ import annotations

import logging

import msgspec

from inference_runtime.config import read_secret
from inference_runtime.config.environment import read_proxy_environment
from inference_runtime.engine.runner import RunnerInfo
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.http_client import HttpClient
from inference_runtime.remote.proxy import choose_proxies
from inference_runtime.remote.redaction import Redactor
from inference_runtime.remote.sendable import check_sendable
from inference_runtime.remote.tls_context import tls_context
from inference_runtime.types import Deployment, Secret

log = logging.getLogger("inference_runtime.remote")


class RemoteSession:
    def __init__(self, deployment: Deployment, *, device: str = "cpu") -> None:
        self.deployment = deployment
        self.config = RemoteConfig.of(deployment)
        self.http: HttpClient | None = None
        self.key = Secret("")
        self.key_reads = 0
        self.redactor = Redactor()
        """Every key this session has held (requests in flight keep an older one)."""
        self.provider = deployment.runtime
        self._info = RunnerInfo(
            runtime=deployment.runtime,
            transport="remote",
            max_context=0,  # the provider decides
            capabilities=frozenset(),
        )

    @property
    def info(self) -> RunnerInfo:
        return self._info

    async def load(self) -> None:
        self.refresh_key()
        config = self.config
        if config.proxy is msgspec.UNSET:
            proxies = choose_proxies(None, read_proxy_environment())
        else:
            proxies = choose_proxies(config.proxy, None)
        self.redactor.update(proxies.secrets)
        self.http = HttpClient(
            max_connections=config.max_concurrent,
            connect_timeout_s=config.timeouts.connect_s,
            ssl_context=tls_context(
                ca_bundle=config.ca_bundle,
                client_cert=config.client_cert,
                client_key=config.client_key,
            ),
            proxies=proxies,
            keepalive_s=config.keepalive_idle_s,
        )

    async def rebuild(self) -> None:
        await self.close()
        await self.load()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None

    def refresh_key(self) -> bool:
        """Read the key again; True when it changed."""
        config = self.config
        key = read_secret(env=config.api_key_env, file=config.api_key_file)
        # a key that cannot go in a header fails here, naming where it came from (not its
        # value), rather than in a request's slot
        where = "api_key_env" if config.api_key_env else "api_key_file"
        check_sendable(f"runtime_config.{where}: the key it names", key.reveal())
        self.redactor.update((key.reveal(),))
        changed = key != self.key
        self.key = key
        self.key_reads += 1
        if changed and self.key_reads > 1:
            log.info("%s: API key changed (now %r)", self.deployment.name, key)
        return changed

    def __repr__(self) -> str:
        return f"RemoteSession({self.deployment.name!r}, {self.config.base_url}, key={self.key!r})"
