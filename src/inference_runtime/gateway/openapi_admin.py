"""The admin API's part of the OpenAPI document (merged into ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "An error in OpenAI's shape",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_STATUS = {
    "description": "The deployment's status: spec (secrets masked), state, replicas",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeploymentStatus"}}},
}
_SPEC_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Deployment"}}},
}
_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_SECURED: dict[str, Any] = {"security": [{"adminKey": []}]}
_DENIED = {"401": _ERROR, "403": _ERROR}

ADMIN_PATHS: dict[str, Any] = {
    "/admin/deployments": {
        "get": {**_SECURED, "summary": "List deployments with their replicas and states",
                "responses": {"200": {"description": "{object: list, data: [DeploymentStatus]}"},
                              **_DENIED}},
        "post": {**_SECURED, "summary": "Create a deployment (committed before the answer)",
                 "requestBody": _SPEC_BODY,
                 "responses": {"201": _STATUS, "400": _ERROR, "409": _ERROR, **_DENIED}},
    },
    "/admin/deployments/{name}": {
        "parameters": _NAME,
        "get": {**_SECURED, "summary": "One deployment's status",
                "responses": {"200": _STATUS, "404": _ERROR, **_DENIED}},
        "put": {**_SECURED, "summary": "Create or update; a changed spec rolls replicas one at "
                "a time", "requestBody": _SPEC_BODY,
                "responses": {"200": _STATUS, "400": _ERROR, **_DENIED}},
        "delete": {**_SECURED, "summary": "Delete: gone at once for new requests; replicas "
                   "drain, then stop", "responses": {"200": {"description": "Deleted"},
                                                     "404": _ERROR, **_DENIED}},
    },
    "/admin/deployments/{name}/scale": {
        "parameters": _NAME,
        "post": {**_SECURED, "summary": "Set the replica count (scaling down drains first)",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["replicas"],
                     "properties": {"replicas": {"type": "integer", "minimum": 0}}}}}},
                 "responses": {"200": _STATUS, "400": _ERROR, "404": _ERROR, **_DENIED}},
    },
    "/admin/deployments/{name}/rebuild-session": {
        "parameters": _NAME,
        "post": {**_SECURED, "summary": "Remote replicas read their API key again (rotation, "
                 "no request dropped); optional {replica: id}",
                 "responses": {"200": {"description": "{deployment, replicas: {id: changed}}"},
                               "400": _ERROR, "404": _ERROR, **_DENIED}},
    },
    "/admin/status": {
        "get": {**_SECURED, "summary": "Summary: every deployment's state, and the nodes with "
                "their GPUs and which replicas hold them",
                "responses": {"200": {"description": "{status, deployments, nodes}"}, **_DENIED}},
    },
}  # fmt: skip

ADMIN_SCHEMAS: dict[str, Any] = {
    "Deployment": {
        "type": "object",
        "required": ["name", "runtime"],
        "description": "A deployment spec, as in the config file's deployments: list",
        "properties": {
            "name": {"type": "string"},
            "runtime": {"type": "string",
                        "enum": ["fake", "transformers", "embeddings", "vllm", "openai",
                                 "anthropic"]},
            "model": {"type": "string"},
            "runtime_config": {"type": "object"},
            "replicas": {"type": "integer", "minimum": 0},
            "gpus": {"type": "integer", "minimum": 0},
            "gpu_memory_gib": {"type": ["number", "null"]},
            "serving": {"type": "object"},
            "fallbacks": {"type": "array", "items": {"type": "string"}},
            "budget": {"type": ["object", "null"]},
            "pricing": {"type": "object"},
            "idempotent": {"type": "boolean"},
            "routing": {"type": "string"},
        },
    },
    "DeploymentStatus": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "state": {"type": "string", "enum": ["ready", "progressing", "degraded"]},
            "message": {"type": ["string", "null"]},
            "source": {"type": "string", "enum": ["config", "api"]},
            "revision": {"type": "integer"},
            "replicas": {"type": "object"},
            "replica_list": {"type": "array", "items": {"type": "object"}},
            "spec": {"$ref": "#/components/schemas/Deployment"},
        },
    },
}  # fmt: skip

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (auth.api_keys)"},
    "adminKey": {"type": "http", "scheme": "bearer", "description": "The admin key"},
}
