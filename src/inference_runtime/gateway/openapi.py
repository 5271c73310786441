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
_COMMON_ERRORS = {
    "400": _ERROR,
    "401": {**_ERROR, "description": "No or a wrong API key"},
    "403": {**_ERROR, "description": "A foreign Origin or Host, or a key not allowed here"},
    "404": _ERROR,
    "413": _ERROR,
    "415": {**_ERROR, "description": "The body is not application/json"},
    "429": {**_LIMITED, "description": "Capacity, budget, rate limit, or repeated wrong keys"},
    "502": {**_ERROR, "description": "upstream_error: a remote deployment's provider failed"},
    "503": _LIMITED,
    "504": _ERROR,
}
_API_KEY: dict[str, Any] = {"security": [{"apiKey": []}, {}]}
"""An API key where the server has keys (``auth.api_keys``); none where it has none."""
_DENIED = {key: _COMMON_ERRORS[key] for key in ("401", "403", "429")}
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


def _completion(summary: str, schema: str) -> dict[str, Any]:
    return {
        "post": {
            **_API_KEY,
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
                **_COMMON_ERRORS,
                "500": {**_ERROR, "description": "request_failed_replica: it failed two replicas"},
            },
        }
    }


_SAMPLING = {
    "model": {"type": "string", "minLength": 1},
    "stream": {"type": "boolean", "default": False},
    "stream_options": {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {"include_usage": {"type": "boolean"}},
        "description": "Only with stream: true",
    },
    "n": {"type": "integer", "minimum": 1, "maximum": 128, "default": 1,
          "description": "At most what one replica holds (prompts x n for a local runtime)"},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": _INT32},
    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
    "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "top_k": {"type": ["integer", "null"], "minimum": -1, "maximum": _INT32},
    "seed": {"type": ["integer", "null"], "minimum": -_INT64 - 1, "maximum": _INT64},
    "stop": {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            {"type": "null"},
        ]
    },
    "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
    "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
    "user": {"type": ["string", "null"]},
    "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
    "store": {"type": ["boolean", "null"]},
    "response_format": {
        "type": ["object", "null"],
        "description": "Locally only {type: text}; remote deployments forward any",
    },
    "tool_choice": {"description": "Locally only \"none\"; remote deployments forward any"},
}  # fmt: skip
_STREAM_ONLY = {
    "stream_options": {"required": ["stream"], "properties": {"stream": {"const": True}}}
}
_PASSED_ON = (
    "Fields beyond these are refused by local runtimes (400 unrecognized_argument) and "
    "forwarded untouched by remote deployments (runtime openai or anthropic)."
)
_PART = {
    "oneOf": [
        {"type": "object", "required": ["type", "text"],
         "properties": {"type": {"const": "text"}, "text": {"type": "string"}}},
        *({"type": "object", "required": ["type", kind],
           "properties": {"type": {"const": kind}, kind: {"type": "object"}}}
          for kind in ("image_url", "input_audio", "file")),
    ],
    "description": "Local runtimes read text parts only (other parts: 400 naming the part)",
}  # fmt: skip
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string",
                 "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {"oneOf": [{"type": "string"},
                              {"type": "array", "minItems": 1, "items": _PART},
                              {"type": "null"}]},
        "name": {"type": ["string", "null"]},
        "tool_calls": {"type": ["array", "null"], "items": {"type": "object"}},
        "tool_call_id": {"type": ["string", "null"]},
    },
    "description": "content is required unless an assistant message carries tool_calls",
    "anyOf": [
        {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
        {"required": ["tool_calls"],
         "properties": {"role": {"const": "assistant"},
                        "tool_calls": {"type": "array", "minItems": 1}}},
    ],
}  # fmt: skip

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "inference-runtime", "version": __version__},
    "paths": {
        "/v1/chat/completions": _completion("Create a chat completion", "ChatCompletionRequest"),
        "/v1/completions": _completion("Create a text completion", "CompletionRequest"),
        "/v1/embeddings": {
            "post": {
                **_API_KEY,
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
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/models": {
            "get": {
                **_API_KEY,
                "summary": "List the served models",
                "responses": {"200": {"description": "A list of models"}, **_DENIED},
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                **_API_KEY,
                "summary": "One served model",
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": {"description": "The model"}, "404": _ERROR, **_DENIED},
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
                "additionalProperties": False,
                "dependentSchemas": {
                    **_STREAM_ONLY,
                    "top_logprobs": {
                        "required": ["logprobs"],
                        "properties": {"logprobs": {"const": True}},
                    },
                },
                "description": _PASSED_ON,
                "properties": {
                    **_SAMPLING,
                    "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
                    "max_completion_tokens": {
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "maximum": _INT32,
                    },
                    "logprobs": {"type": "boolean"},
                    "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
                },
            },
            "CompletionRequest": {
                "type": "object",
                "required": ["model", "prompt"],
                "additionalProperties": False,
                "dependentSchemas": _STREAM_ONLY,
                "description": _PASSED_ON,
                "properties": {
                    **_SAMPLING,
                    "prompt": {
                        "oneOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 2048,
                                "items": {"type": "string"},
                            },
                        ]
                    },
                    "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
                },
            },
            "EmbeddingRequest": {
                "type": "object",
                "required": ["model", "input"],
                "additionalProperties": False,
                "properties": {
                    "model": {"type": "string", "minLength": 1},
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
                                "items": {"type": "integer", "minimum": 0, "maximum": _INT32},
                            },
                            {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 2048,
                                "items": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "integer", "minimum": 0, "maximum": _INT32},
                                },
                            },
                        ]
                    },
                    "encoding_format": {
                        "type": "string",
                        "enum": ["float", "base64"],
                        "default": "float",
                    },
                    "dimensions": {"type": ["integer", "null"], "minimum": 1, "maximum": _INT32},
                    "user": {"type": ["string", "null"]},
                },
            },
        }
    },
}
OPENAPI["paths"].update(ADMIN_PATHS)
OPENAPI["components"]["schemas"].update(ADMIN_SCHEMAS)
OPENAPI["components"]["securitySchemes"] = SECURITY_SCHEMES
