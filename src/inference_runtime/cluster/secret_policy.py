"""Which secrets a deployment written through the admin API may name.

A remote deployment's ``runtime_config`` names where its key is (``api_key_env``,
``api_key_file``) and, for TLS, local files (``client_key``, ...); the replica reads them and
sends the key to the deployment's ``base_url``. Through the admin API, whoever can reach it
could point ``base_url`` at themselves and name any variable or file of the server: the config
file is the operator's word, the API is not. So a deployment from the API may name only:

- an environment variable on ``auth.secret_env_allow``, or one a config-file deployment names;
- a file a config-file deployment names (for the same use or another): never an arbitrary one.

Values given inline (``headers``) are the caller's own and leave nothing of the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from inference_runtime.errors import PermissionDenied
from inference_runtime.types import Deployment

FILE_FIELDS = ("ca_bundle", "client_cert", "client_key")
"""``runtime_config`` fields that name a local file besides those ending in ``_file``."""


class SecretNotAllowed(PermissionDenied):
    """A deployment from the admin API names a secret the operator did not allow (403)."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


def _named(deployment: Deployment) -> tuple[dict[str, str], dict[str, str]]:
    """``(env fields, file fields)`` of a deployment's ``runtime_config``: field -> value."""
    envs: dict[str, str] = {}
    files: dict[str, str] = {}
    for field, value in deployment.runtime_config.items():
        if not isinstance(value, str) or not value:
            continue
        if field.endswith("_env"):
            envs[field] = value
        elif field.endswith("_file") or field in FILE_FIELDS:
            files[field] = value
    return envs, files


@dataclass(frozen=True, slots=True)
class SecretPolicy:
    env_allow: frozenset[str] = frozenset()
    files_allow: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, *, env_allow: Iterable[str], config_deployments: Iterable[Deployment]
    ) -> SecretPolicy:
        """The allow-list plus whatever the config file's deployments already name."""
        envs, files = set(env_allow), set[str]()
        for deployment in config_deployments:
            named_envs, named_files = _named(deployment)
            envs.update(named_envs.values())
            files.update(named_files.values())
        return cls(frozenset(envs), frozenset(files))

    def check(self, deployment: Deployment) -> None:
        """Refuse (403, naming the field) a secret this policy does not allow."""
        envs, files = _named(deployment)
        for field, name in envs.items():
            if name not in self.env_allow:
                raise SecretNotAllowed(
                    f"runtime_config.{field}: {name!r} is not on the allow-list of environment "
                    "variables a deployment from the admin API may name (auth.secret_env_allow, "
                    "or one a deployment of the config file names)",
                    param=f"runtime_config.{field}",
                )
        for field, path in files.items():
            if path not in self.files_allow:
                raise SecretNotAllowed(
                    f"runtime_config.{field}: a deployment from the admin API may name only a "
                    "file that a deployment of the config file names; put this deployment in "
                    "the config file, or read its key from an allowed variable",
                    param=f"runtime_config.{field}",
                )
