"""The OpenAPI document served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from inference_runtime.gateway.openapi_admin import ADMIN_PATHS, ADMIN_SCHEMAS, SECURITY_SCHEMES
from inference_runtime.version import __version__

_ERROR = {
    "description": "An error in OpenAI's shape",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_LIMITED = {**_ERROR, "headers": {"Retry-After": {"schema": {"type": "integer"}}}}


def _completion(summary: str, schema: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
                },
            },
            "responses": {
                "200": {
                    "description": "A JSON body, or server-sent events when stream is true",
                    "content": {"application/json": {}, "text/event-stream": {}},
                },
                "400": _ERROR,
                "404": _ERROR,
                "413": _ERROR,
                "429": _LIMITED,
                "503": _LIMITED,
                "504": _ERROR,
            },
        }
    }


_SAMPLING = {
    "model": {"type": "string"},
    "stream": {"type": "boolean", "default": False},
    "stream_options": {
        "type": "object",
        "properties": {"include_usage": {"type": "boolean"}},
    },
    "n": {"type": "integer", "minimum": 1, "maximum": 128, "default": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": -1},
    "seed": {"type": "integer"},
    "stop": {
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]
    },
    "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "user": {"type": "string"},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "inference-runtime", "version": __version__},
    "paths": {
        "/v1/chat/completions": _completion("Create a chat completion", "ChatCompletionRequest"),
        "/v1/completions": _completion("Create a text completion", "CompletionRequest"),
        "/v1/embeddings": {
            "post": {
                "summary": "Create embeddings (runtime: embeddings)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/EmbeddingRequest"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "A list of embeddings with usage",
                        "content": {"application/json": {}},
                    },
                    "400": _ERROR,
                    "404": _ERROR,
                    "413": _ERROR,
                    "429": _LIMITED,
                    "503": _LIMITED,
                    "504": _ERROR,
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "List the served models",
                "responses": {"200": {"description": "A list of models"}},
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "summary": "One served model",
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": {"description": "The model"}, "404": _ERROR},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {"200": {"description": "The process serves"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: every deployment has a healthy replica",
                "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Text exposition format"}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "param": {"type": ["string", "null"]},
                            "code": {"type": ["string", "null"]},
                        },
                    }
                },
            },
            "ChatCompletionRequest": {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    **_SAMPLING,
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["role"],
                            "properties": {
                                "role": {"type": "string"},
                                "content": {
                                    "oneOf": [
                                        {"type": "string"},
                                        {"type": "array"},
                                        {"type": "null"},
                                    ]
                                },
                                "name": {"type": "string"},
                            },
                        },
                    },
                    "max_completion_tokens": {"type": "integer", "minimum": 1},
                    "logprobs": {"type": "boolean"},
                    "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
                },
            },
            "CompletionRequest": {
                "type": "object",
                "required": ["model", "prompt"],
                "properties": {
                    **_SAMPLING,
                    "prompt": {
                        "oneOf": [
                            {"type": "string"},
                            {"type": "array", "items": {"type": "string"}},
                        ]
                    },
                    "logprobs": {"type": "integer", "minimum": 0, "maximum": 5},
                },
            },
            "EmbeddingRequest": {
                "type": "object",
                "required": ["model", "input"],
                "additionalProperties": False,
                "properties": {
                    "model": {"type": "string"},
                    "input": {
                        "oneOf": [
                            {"type": "string", "minLength": 1},
                            {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 2048,
                                "items": {"type": "string", "minLength": 1},
                            },
                            {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "integer", "minimum": 0},
                            },
                            {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 2048,
                                "items": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "integer", "minimum": 0},
                                },
                            },
                        ]
                    },
                    "encoding_format": {
                        "type": "string",
                        "enum": ["float", "base64"],
                        "default": "float",
                    },
                    "dimensions": {"type": "integer", "minimum": 1},
                    "user": {"type": "string"},
                },
            },
        }
    },
}
OPENAPI["paths"].update(ADMIN_PATHS)
OPENAPI["components"]["schemas"].update(ADMIN_SCHEMAS)
OPENAPI["components"]["securitySchemes"] = SECURITY_SCHEMES
