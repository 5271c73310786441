"""The installed package's version (one place, for the CLI, the API and the OpenAPI document)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inference-runtime")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
