"""The runtime's configuration file (YAML): a gateway and a list of deployments."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from inference_runtime.types import Deployment
from inference_runtime.types.convert import typed


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP listener."""

    host: str = "127.0.0.1"
    """Address to bind (loopback by default)."""
    port: int = 8080
    """TCP port; 0 picks a free one (tests)."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Larger request bodies get 413."""
    drain_timeout_s: float = 30.0
    """On shutdown, how long in-flight requests may take to finish."""
    max_messages: int = 2048
    """Chat requests with more messages get 400."""
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    """The serving process's event loop: ``auto`` takes uvloop when it is installed (it is a
    dependency on Linux and macOS; much less CPU per request), else the standard loop."""
    header_timeout_s: float = 15.0
    """A request's line and headers must arrive within this many seconds of its first byte, or
    the connection is closed (a client that drips its headers holds no connection for long)."""
    body_timeout_s: float = 60.0
    """A request's whole body must arrive within this many seconds of its headers, or the
    connection is closed (a promised body that never comes holds neither a handler nor the
    drain)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (without port) the ``Host`` header may carry. An IP address or a loopback
    name (``localhost``) is always accepted: a DNS-rebinding page's ``Host`` is its own domain
    name. Empty: on a loopback address no other name is, which refuses DNS rebinding; on any
    other address every ``Host`` is (a proxy in front may rewrite it; keys guard such a
    server). Listing names restricts a non-loopback server to them and widens a loopback one."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins (``https://app.example``) whose requests are accepted. A request with no
    ``Origin`` (every non-browser client) or from the server's own origin always is, and on a
    loopback address so is any loopback origin; others get 403. An accepted origin's CORS
    preflight is answered and every answer to it carries ``Access-Control-Allow-Origin``, so a
    page there can use the API (its key in ``Authorization``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"gateway.port: {self.port} is not a TCP port (0-65535)")
        if self.max_body_bytes < 1024:
            raise ValueError("gateway.max_body_bytes: must be >= 1024")
        if self.drain_timeout_s < 0:
            raise ValueError("gateway.drain_timeout_s: must be >= 0")
        if self.max_messages < 1:
            raise ValueError("gateway.max_messages: must be >= 1")
        if self.header_timeout_s <= 0:
            raise ValueError("gateway.header_timeout_s: must be > 0")
        if self.body_timeout_s <= 0:
            raise ValueError("gateway.body_timeout_s: must be > 0")


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who may call the API. Keys are read when the server starts; each source may be combined
    with the others. Prefer ``*_env`` or ``*_file`` over keys written into the config."""

    api_keys: tuple[str, ...] = ()
    """Bearer keys accepted on ``/v1/*``."""
    api_keys_env: str | None = None
    """An environment variable holding API keys, separated by commas."""
    api_keys_file: str | None = None
    """A file holding API keys, one per line (``#`` starts a comment)."""
    admin_key: str | None = None
    """The Bearer key of ``/admin/*``. With no admin key, the admin API is open only while no
    API key is configured either (a loopback development server); otherwise it answers 403."""
    admin_key_env: str | None = None
    """An environment variable holding the admin key."""
    admin_key_file: str | None = None
    """A file holding the admin key."""
    requests_per_minute: int | None = None
    """Per API key: more requests than this within a minute get 429."""
    allow_unauthenticated: bool = False
    """Serve on a non-loopback address with no API key (refused unless this is true)."""
    secret_env_allow: tuple[str, ...] = ()
    """Environment variables a deployment created or changed through the admin API may name as
    its key (``runtime_config.api_key_env``), besides those the config file's deployments name.
    Through the API a deployment may name no file (``api_key_file``, TLS files) but one a
    config-file deployment names: the API's caller chooses where the key is sent."""

    def __post_init__(self) -> None:
        if self.requests_per_minute is not None and self.requests_per_minute < 1:
            raise ValueError("auth.requests_per_minute: must be >= 1")

    def __repr__(self) -> str:
        # the keys themselves never show, even in a debug print of the config
        return (
            f"AuthConfig(api_keys=<{len(self.api_keys)} inline>, api_keys_env={self.api_keys_env!r}"
            f", api_keys_file={self.api_keys_file!r}"
            f", admin_key={'<set>' if self.admin_key else None}"
            f", admin_key_env={self.admin_key_env!r}, admin_key_file={self.admin_key_file!r}"
            f", requests_per_minute={self.requests_per_minute})"
        )


class StorageConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the catalog of deployments and the spend ledger are kept."""

    path: str | None = None
    """The SQLite file; default ``state.db`` in the data folder ($INFERENCE_RUNTIME_DATA_DIR,
    else $XDG_DATA_HOME/inference-runtime, else ~/.local/share/inference-runtime).
    ``:memory:`` keeps nothing across restarts."""


class ManagerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the deployment manager drives replicas toward the catalog."""

    health_interval_s: float = 5.0
    """How often every replica's engine is asked for its progress."""
    hang_timeout_s: float = 120.0
    """A replica with work waiting or running whose engine has not finished a step for this
    long is hung: it is taken out and re-placed like a failed one."""
    drain_timeout_s: float = 60.0
    """Scale-down, delete and rolling updates wait this long for a replica's requests to
    finish before stopping it."""
    ready_timeout_s: float = 600.0
    """A rolling update waits this long for a new replica to become healthy (loading weights)
    before it stops and reports the update as stuck."""
    replace_backoff_s: float = 1.0
    """Pause before re-placing a failed replica (doubled on each failure in a row, max 60 s)."""
    max_replicas: int = 64
    """The most replicas one deployment may ask for (more is a 400 naming ``replicas``, and a
    config file asking more is refused at start): a typo such as ``replicas: 1000000`` must not
    start replicas until the machine gives out. Placement bounds it further by what the nodes
    could ever hold."""

    def __post_init__(self) -> None:
        for name in ("health_interval_s", "hang_timeout_s", "ready_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"manager.{name}: must be > 0")
        if self.max_replicas < 1:
            raise ValueError("manager.max_replicas: must be >= 1")
        if self.drain_timeout_s < 0 or self.replace_backoff_s < 0:
            raise ValueError("manager: drain_timeout_s and replace_backoff_s must be >= 0")


CLUSTER_ROLES = ("head", "gateway")


class ClusterConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where replicas run: in this process (``local``) or in Ray actors across a Ray cluster."""

    backend: Literal["local", "ray"] = "local"
    role: str = "head"
    """Ray: ``head`` runs the whole runtime (catalog, placement, replicas) and a gateway;
    ``gateway`` runs only a gateway (coordinator, metrics, HTTP) that serves the deployments
    the head placed, routing on in-flight counts shared with every other gateway through the
    routing board; it ignores ``deployments`` (the head's config names them: one config file
    can serve the head and every gateway). Start one per node, or as many as the load needs."""
    address: str | None = None
    """Ray: the cluster to join (``auto``, ``HOST:6379``, ``ray://HOST:10001``); none: the
    cluster started on this machine by ``ray start``, else a new local one."""
    namespace: str = "inference-runtime"
    """Ray: the namespace of the replicas' actors and placement groups."""
    replica_cpus: float = 1.0
    """Ray: CPUs reserved for each replica (its placement group bundle holds these and the
    replica's GPUs). Nodes with fewer CPUs than this take no replica."""
    placement_timeout_s: float = 60.0
    """Ray: how long a replica waits for its placement group; then it counts as failed and is
    placed again (after the backoff)."""
    call_timeout_s: float = 30.0
    """Ray: the bound on a control call to a replica's actor (admission, statistics)."""
    sync_interval_s: float = 0.05
    """Ray: how often each runtime syncs with the routing board (publishes its in-flight
    counts, pulls the others' and the head's replicas): the lag of a gateway's view of the
    others' load."""
    board_ttl_s: float = 5.0
    """Ray: a runtime not heard from by the routing board for this long (it died without
    stopping) has its in-flight counts removed."""

    def __post_init__(self) -> None:
        if self.replica_cpus < 0:
            raise ValueError("cluster.replica_cpus: must be >= 0")
        if self.placement_timeout_s <= 0 or self.call_timeout_s <= 0:
            raise ValueError("cluster: placement_timeout_s and call_timeout_s must be > 0")
        if self.sync_interval_s <= 0 or self.board_ttl_s <= self.sync_interval_s:
            raise ValueError("cluster: sync_interval_s must be > 0 and board_ttl_s > it")
        if self.role not in CLUSTER_ROLES:
            raise ValueError(
                f"cluster.role: {self.role!r} is not one of {', '.join(CLUSTER_ROLES)}"
            )
        if self.role == "gateway" and self.backend != "ray":
            raise ValueError(
                "cluster.role: gateway serves the deployments of a head on a Ray cluster; "
                "it needs cluster.backend: ray (serve --ray ADDRESS --role gateway)"
            )


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole server: its gateway and the deployments it serves."""

    gateway: GatewayConfig = GatewayConfig()
    deployments: tuple[Deployment, ...] = ()
    """Applied at every start; a deployment named here replaces a stored one of the same name."""
    auth: AuthConfig = AuthConfig()
    storage: StorageConfig = StorageConfig()
    manager: ManagerConfig = ManagerConfig()
    cluster: ClusterConfig = ClusterConfig()

    def __post_init__(self) -> None:
        names = [d.name for d in self.deployments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"deployments: names must be unique; repeated: {duplicates}")
        known = set(names)
        for dep in self.deployments:
            missing = [f for f in dep.fallbacks if f not in known]
            if missing:
                raise ValueError(
                    f"deployments[{dep.name}].fallbacks: unknown deployment(s) {missing}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeConfig:
        return typed(data, cls, what="invalid config")


def load_config(path: str | Path) -> RuntimeConfig:
    """Read and validate a YAML config file; errors name the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ValueError(f"cannot read config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping (gateway:, deployments:)")
    try:
        return RuntimeConfig.from_dict(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
