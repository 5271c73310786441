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
_DENIED = {
    "401": {**_ERROR, "description": "No or a wrong admin key"},
    "403": {**_ERROR, "description": "An API key (not the admin key), or a foreign Origin/Host"},
    "415": {**_ERROR, "description": "The body is not application/json"},
    "429": {**_ERROR, "description": "Repeated wrong keys from this client: slowed"},
}

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
                 "requestBody": {"required": False, "content": {"application/json": {"schema": {
                     "type": "object", "properties": {"replica": {"type": "string"}}}}}},
                 "responses": {"200": {"description": "{deployment, replicas: {id: changed}}"},
                               "400": _ERROR, "404": _ERROR, **_DENIED}},
    },
    "/admin/status": {
        "get": {**_SECURED, "summary": "Summary: every deployment's state, and the nodes with "
                "their GPUs and which replicas hold them",
                "responses": {"200": {"description": "{status, deployments, nodes}"}, **_DENIED}},
    },
}  # fmt: skip

_SPEND = {"type": ["number", "null"], "exclusiveMinimum": 0}
_SERVING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_concurrent": {"type": "integer", "minimum": 1},
        "queue_capacity": {"type": "integer", "minimum": 0},
        "max_batched_tokens": {"type": "integer", "minimum": 1},
        "on_capacity_exhausted": {
            "type": "string",
            "enum": ["reject", "queue", "fallback"],
            "description": "fallback needs a non-empty fallbacks list",
        },
        "queue_timeout_s": {"type": "number", "exclusiveMinimum": 0},
        "retry_after_s": {"type": "number", "exclusiveMinimum": 0},
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
    },
}
_BUDGET = {
    "type": "object",
    "additionalProperties": False,
    "description": "Set max_spend_per_hour, max_spend_per_day, or both",
    "properties": {
        "max_spend_per_hour": _SPEND,
        "max_spend_per_day": _SPEND,
        "on_exceeded": {"type": "string", "enum": ["reject", "warn", "throttle"]},
    },
    "anyOf": [
        {
            "required": ["max_spend_per_hour"],
            "properties": {"max_spend_per_hour": {"type": "number"}},
        },
        {
            "required": ["max_spend_per_day"],
            "properties": {"max_spend_per_day": {"type": "number"}},
        },
    ],
}
_PRICING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "input_per_mtok": {"type": "number", "minimum": 0},
        "output_per_mtok": {"type": "number", "minimum": 0},
    },
}

ADMIN_SCHEMAS: dict[str, Any] = {
    "Deployment": {
        "type": "object",
        "required": ["name", "runtime"],
        "additionalProperties": False,
        "description": "A deployment spec, as in the config file's deployments: list",
        "allOf": [
            {  # falling back needs somewhere to fall back to
                "if": {"required": ["serving"], "properties": {"serving": {
                    "required": ["on_capacity_exhausted"],
                    "properties": {"on_capacity_exhausted": {"const": "fallback"}}}}},
                "then": {"required": ["fallbacks"], "properties": {"fallbacks": {"minItems": 1}}},
            },
            {  # a remote runtime uses no GPU
                "if": {"required": ["runtime"],
                       "properties": {"runtime": {"enum": ["openai", "anthropic"]}}},
                "then": {"properties": {"gpus": {"const": 0}}},
            },
        ],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$",
                     "description": "On PUT: the same as the path's name"},
            "runtime": {"type": "string",
                        "enum": ["fake", "transformers", "embeddings", "vllm", "openai",
                                 "anthropic"]},
            "model": {"type": "string"},
            "runtime_config": {"type": "object",
                               "description": "The runtime's own settings (refused if unknown)"},
            "replicas": {"type": "integer", "minimum": 0,
                         "description": "At most manager.max_replicas (64 by default) and what "
                                        "the nodes can hold: a 400 beyond"},
            "gpus": {"type": "integer", "minimum": 0,
                     "description": "0 for a remote runtime (openai, anthropic)"},
            "gpu_memory_gib": {"type": ["number", "null"], "exclusiveMinimum": 0,
                               "maximum": 1048576},
            "serving": _SERVING,
            "fallbacks": {"type": "array", "items": {"type": "string"},
                          "description": "Never the deployment's own name"},
            "budget": {"oneOf": [_BUDGET, {"type": "null"}]},
            "pricing": _PRICING,
            "idempotent": {"type": "boolean"},
            "routing": {"type": "string", "enum": ["least_loaded", "power_of_two",
                                                   "round_robin", "session_affinity"]},
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
