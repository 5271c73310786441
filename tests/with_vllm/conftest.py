"""The vLLM tests run only where vLLM is installed (``.venv-vllm``, built by ``setup_env.sh``);
elsewhere this folder is not collected."""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("vllm") is None:  # find, never import: vLLM is slow to import
    collect_ignore_glob = ["test_*.py"]
else:
    # a 2-core machine: vLLM's CPU backend otherwise reserves most of the memory and warns loudly
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
