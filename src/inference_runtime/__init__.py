"""inference-runtime: model inference behind an OpenAI-compatible API, as a supervised actor system.

``import inference_runtime`` stays light: it never imports torch, transformers, Ray or vLLM.
"""

from importlib.metadata import PackageNotFoundError, version

from inference_runtime.actors import ActorRef, ActorSystem, Props

try:
    __version__ = version("inference-runtime")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["ActorRef", "ActorSystem", "Props", "__version__"]
