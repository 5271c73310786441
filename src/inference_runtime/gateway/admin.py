"""The admin API under ``/admin``: the catalog of deployments over HTTP (the CLI's verbs use it).

Every write is committed by the deployment manager before it answers. Answers never show a
secret (``mask_secrets``: string fields named like a secret, every header value), and a masked
value sent back unchanged keeps the secret it stands for, so GET then PUT of a spec round-trips.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from inference_runtime.actors import ActorRef
from inference_runtime.cluster import (
    ApplyDeployment,
    DeleteDeployment,
    GetDeploymentStatus,
    GetInventory,
    RebuildSession,
    ScaleDeployment,
)
from inference_runtime.errors import NotFound, RequestError
from inference_runtime.gateway import json_body
from inference_runtime.gateway.schema import INT_GOT_FLOAT, whole_numbers
from inference_runtime.types import Deployment

MASK = "***"
_SECRET_NAME = re.compile(
    r"(^|_)(key|apikey|token|authorization|credentials?)$|secret|password|passwd",
    re.IGNORECASE,
)
"""A field that holds a secret when its value is a string: ``api_key``, ``admin_key``,
``access_token``, ``client_secret``, ``password``, ... but not ``max_tokens`` or
``token_latency_ms`` (numbers), nor ``api_key_env`` / ``api_key_file`` (where a secret is, not
what it is)."""
_HEADERS = "headers"
_URL_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@]*)@")
"""A URL with credentials in it (``http://user:password@proxy:3128``): they are masked, the
rest of the URL shows."""
_QUERY_SECRET = re.compile(r"([?&][^=&#]+)=([^&#]*)")
_ASK_TIMEOUT_S = 30.0


def _is_secret(name: object, value: object) -> bool:
    return (
        isinstance(name, str)
        and isinstance(value, str)
        and value != ""
        and not name.endswith(("_env", "_file"))
        and _SECRET_NAME.search(name) is not None
    )


def mask_secrets(value: Any) -> Any:
    """A copy of ``value`` with its secrets replaced by ``***``: string fields named like a
    secret, and every value of a ``headers`` mapping (a header may carry a key under any name)."""
    if isinstance(value, dict):
        return {
            k: MASK
            if _is_secret(k, v)
            else _mask_all(v)
            if k == _HEADERS and isinstance(v, dict)
            else mask_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return _mask_url(value)
    return value


def _mask_url(url: str) -> str:
    """A URL with its credentials (``user:password@``) and its secret-named query values
    (``?api_key=...``) masked."""
    if "@" in url:
        url = _URL_CREDENTIALS.sub(lambda m: f"{m[1]}{MASK}@", url, count=1)
    if "?" in url:
        url = _QUERY_SECRET.sub(
            lambda m: f"{m[1]}={MASK}" if _SECRET_NAME.search(m[1].lstrip("?&")) else m[0], url
        )
    return url


def _mask_all(headers: dict[str, Any]) -> dict[str, Any]:
    return {k: MASK if v not in (None, "") else v for k, v in headers.items()}


def unmask(sent: Any, current: Any) -> Any:
    """``sent`` with every ``***`` that stands where ``current`` has a masked secret replaced by
    that secret: a spec read back (masked) and sent again changes nothing it did not change."""
    return _unmask(sent, current, mask_secrets(current))


def _unmask(sent: Any, current: Any, masked: Any) -> Any:
    if not (isinstance(sent, dict) and isinstance(current, dict) and isinstance(masked, dict)):
        return sent
    return {
        k: v
        if k not in current
        else current[k]
        if isinstance(v, str) and v == masked[k] and masked[k] != current[k]
        else _unmask(v, current[k], masked[k])
        for k, v in sent.items()
    }


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json"
    )


def _masked(view: dict[str, Any]) -> dict[str, Any]:
    return {**view, "spec": mask_secrets(view["spec"])}


async def _json_body(request: web.Request) -> Any:
    body = await request.read()
    if not body:
        raise RequestError("the request body is empty; send a JSON object")
    try:
        return json_body.decode(body)
    except msgspec.DecodeError as error:
        raise RequestError(f"the request body is not valid JSON: {error}") from None


def _deployment(data: Any, *, name: str | None = None) -> Deployment:
    if not isinstance(data, dict):
        raise RequestError("a deployment is a JSON object (name, runtime, model, ...)")
    if name is not None and data.setdefault("name", name) != name:
        raise RequestError(
            f"name: the body says {data['name']!r} but the path says {name!r}", param="name"
        )
    try:
        return Deployment.from_dict(data)
    except ValueError as error:
        if not INT_GOT_FLOAT.search(str(error)):
            raise RequestError(str(error)) from None
    # JSON has one number type and the OpenAPI document's ``integer`` takes ``2.0``
    try:
        return Deployment.from_dict(whole_numbers(data))
    except ValueError as error:
        raise RequestError(str(error)) from None


class AdminRoutes:
    def __init__(self, *, manager: ActorRef | None, placement: ActorRef | None) -> None:
        self.manager = manager
        self.placement = placement

    def add_to(self, app: web.Application) -> None:
        deployments = "/admin/deployments"
        app.router.add_get(deployments, self.list_deployments)
        app.router.add_post(deployments, self.create)
        app.router.add_post(deployments + "/{name:.+}/scale", self.scale)
        app.router.add_post(deployments + "/{name:.+}/rebuild-session", self.rebuild_session)
        app.router.add_get(deployments + "/{name:.+}", self.get)
        app.router.add_put(deployments + "/{name:.+}", self.update)
        app.router.add_delete(deployments + "/{name:.+}", self.delete)
        app.router.add_get("/admin/status", self.status)

    async def _ask(self, message: Any) -> Any:
        if self.manager is None:
            raise NotFound("no DeploymentManagerActor runs: the admin API is not available")
        return await self.manager.ask(message, timeout=_ASK_TIMEOUT_S)

    async def list_deployments(self, request: web.Request) -> web.Response:
        views = await self._ask(GetDeploymentStatus())
        return _json({"object": "list", "data": [_masked(v) for v in views]})

    async def get(self, request: web.Request) -> web.Response:
        view = await self._ask(GetDeploymentStatus(request.match_info["name"]))
        return _json(_masked(view))

    async def create(self, request: web.Request) -> web.Response:
        deployment = _deployment(await _json_body(request))
        await self._ask(ApplyDeployment(deployment, source="api", create=True))
        view = await self._ask(GetDeploymentStatus(deployment.name))
        return _json(_masked(view), status=201)

    async def update(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = await _json_body(request)
        current = await self._current_spec(name)
        if current is not None:
            data = unmask(data, current)
        deployment = _deployment(data, name=name)
        await self._ask(ApplyDeployment(deployment, source="api"))
        return _json(_masked(await self._ask(GetDeploymentStatus(name))))

    async def _current_spec(self, name: str) -> dict[str, Any] | None:
        try:
            view = await self._ask(GetDeploymentStatus(name))
        except NotFound:
            return None
        spec: dict[str, Any] = view["spec"]
        return spec

    async def scale(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = await _json_body(request)
        replicas = whole_numbers(data.get("replicas")) if isinstance(data, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise RequestError(
                'replicas: send {"replicas": N} with N a whole number >= 0', param="replicas"
            )
        await self._ask(ScaleDeployment(name, replicas))
        return _json(_masked(await self._ask(GetDeploymentStatus(name))))

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._ask(DeleteDeployment(name))
        return _json({"id": name, "object": "deployment", "deleted": True})

    async def rebuild_session(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        replica = request.query.get("replica")
        if request.can_read_body:
            data = await _json_body(request)
            if isinstance(data, dict) and isinstance(data.get("replica"), str):
                replica = data["replica"]
        changed = await self._ask(RebuildSession(name, replica))
        return _json({"deployment": name, "replicas": changed})

    async def status(self, request: web.Request) -> web.Response:
        views = await self._ask(GetDeploymentStatus())
        nodes = (
            await self.placement.ask(GetInventory(), timeout=_ASK_TIMEOUT_S)
            if self.placement is not None
            else {}
        )
        summary = [
            {
                "name": v["name"],
                "runtime": v["runtime"],
                "state": v["state"],
                "desired": v["replicas"]["desired"],
                "ready": v["replicas"]["ready"],
                "restarts": sum(r["restarts"] for r in v["replica_list"]),
                "failures": sum(r["failures"] for r in v["replica_list"]),
                "message": v["message"],
                "last_errors": {
                    r["id"]: r["last_error"]
                    for r in v["replica_list"]
                    if r["last_error"] and r["state"] != "healthy"
                },
            }
            for v in views
        ]
        ready = all(s["state"] == "ready" for s in summary)
        return _json(
            {"status": "ready" if ready else "degraded", "deployments": summary, "nodes": nodes}
        )
