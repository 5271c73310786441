"""``EmbeddingRunner``: a sentence-embedding model (``runtime: embeddings``) on CPU or GPU.

The model folder says how to pool: a sentence-transformers folder lists its modules in
``modules.json`` (Transformer, Pooling with its ``pooling_mode_*`` flags, optionally Normalize),
and we follow it so our vectors are the ones the model was trained to produce. Any other module
(Dense, ...) is refused at load rather than silently skipped. A plain transformers folder without
``modules.json`` gets mean pooling and no normalisation: the common default, and no guess about
a unit norm the model never promised.

``runtime_config``: ``max_batch_size`` (64 inputs per forward), ``matryoshka`` (false; true lets
clients ask for fewer ``dimensions``), ``dtype`` (``float32`` or ``bfloat16``; vectors are always
returned as float32), ``max_input_tokens`` (default: the smallest sane limit the folder declares:
``max_position_embeddings``, the tokenizer's ``model_max_length``, sentence-transformers'
``max_seq_length``). Longer inputs are refused, never truncated, as OpenAI does.

Token arrays are fed to the model as given (special tokens included if the caller put them in),
as vLLM does. torch and transformers are imported in ``load`` (in a worker thread), so that
neither ``import inference_runtime`` nor building a runner pays for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference_runtime.engine.runner import RunnerInfo
from inference_runtime.engine.runners import model_source
from inference_runtime.engine.runners.load_progress import LoadProgress
from inference_runtime.engine.runners.model_source import builtin_path, configure_progress
from inference_runtime.errors import (
    ContextPoisoned,
    OutOfMemory,
    RequestError,
    UnsupportedParameter,
)
from inference_runtime.types import Deployment

log = logging.getLogger("inference_runtime.engine")

Vectors = npt.NDArray[np.float32]
POOLING_FLAGS = {  # sentence-transformers' flag -> our mode, in its concatenation order
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": None,
    "pooling_mode_weightedmean_tokens": None,
    "pooling_mode_lasttoken": "lasttoken",
}
_DTYPES = ("float32", "bfloat16")
_SANE_LIMIT = 1_000_000  # tokenizers without a limit say 1e30


@dataclass(frozen=True, slots=True)
class EmbeddingSettings:
    """The deployment's ``runtime_config``, checked when the runner is built."""

    max_batch_size: int = 64
    matryoshka: bool = False
    dtype: str = "float32"
    max_input_tokens: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EmbeddingSettings:
        unknown = sorted(set(config) - set(cls.__dataclass_fields__))
        if unknown:
            known = ", ".join(cls.__dataclass_fields__)
            raise ValueError(
                f"runtime_config: unknown key(s) {', '.join(unknown)} for runtime 'embeddings' "
                f"(known: {known})"
            )
        settings = cls(**config)
        for name in ("max_batch_size", "max_input_tokens"):
            value = getattr(settings, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"runtime_config.{name}: must be an integer >= 1, got {value!r}")
        if type(settings.matryoshka) is not bool:
            raise ValueError("runtime_config.matryoshka: must be true or false")
        if settings.dtype not in _DTYPES:
            raise ValueError(f"runtime_config.dtype: {settings.dtype!r} is not one of {_DTYPES}")
        return settings


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """What the folder says: where the transformer is, how to pool, whether to normalise."""

    transformer: Path
    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None


def resolve_model_path(model: str) -> Path:
    """The model folder of ``deployment.model``: a path, or ``builtin:NAME`` (a package that
    carries the folder, see ``model_source.BUILTINS``)."""
    path = builtin_path(model.removeprefix("builtin:")) if model.startswith("builtin:") else None
    path = path or Path(model).expanduser()
    if not path.is_dir():
        raise ValueError(f"model: {model!r} is not a folder (embeddings load local folders only)")
    return path


def read_layout(folder: Path) -> ModelLayout:
    """Read ``modules.json`` and the Pooling module's config (see the module docstring)."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return ModelLayout(transformer=folder)
    transformer, modes, normalize = folder, None, False
    for module in json.loads(modules_file.read_text()):
        kind = str(module.get("type", ""))
        path = folder / str(module.get("path", ""))
        short = kind.rsplit(".", 1)[-1]
        if short == "Transformer":
            transformer = path
        elif short == "Pooling":
            modes = _pooling_modes(json.loads((path / "config.json").read_text()))
        elif short == "Normalize":
            normalize = True
        else:
            raise ValueError(f"{modules_file}: module {kind!r} is not supported")
    if modes is None:
        raise ValueError(f"{modules_file}: lists no Pooling module")
    seq_file = transformer / "sentence_bert_config.json"
    max_seq = json.loads(seq_file.read_text()).get("max_seq_length") if seq_file.exists() else None
    return ModelLayout(transformer, modes, normalize, max_seq if isinstance(max_seq, int) else None)


def _pooling_modes(config: Mapping[str, Any]) -> tuple[str, ...]:
    on = [flag for flag in POOLING_FLAGS if config.get(flag)]
    unsupported = [flag for flag in on if POOLING_FLAGS[flag] is None]
    if unsupported:
        raise ValueError(f"pooling: {', '.join(unsupported)} not supported")
    if not on:
        raise ValueError("pooling: no pooling_mode_* flag is set")
    return tuple(str(POOLING_FLAGS[flag]) for flag in on)


class EmbeddingRunner:
    """Tokenizes on the caller's thread (admission), runs ``embed`` in a worker thread."""

    def __init__(self, deployment: Deployment, *, device: str = "cpu") -> None:
        self.deployment = deployment
        self.device = device
        self.settings = EmbeddingSettings.from_config(deployment.runtime_config)
        self.layout: ModelLayout | None = None
        self._torch: Any = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._vocab_size = 0
        self._dimension = 0
        self._max_tokens = self.settings.max_input_tokens or 0

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo(
            runtime="embeddings",
            transport="local",
            max_context=self._max_tokens,
            capabilities=frozenset(),
            kinds=frozenset({"embeddings"}),
        )

    @property
    def dimension(self) -> int:
        """The native vector size (before any ``dimensions`` truncation)."""
        if not self._dimension:
            raise RuntimeError("the embedding model is not loaded")
        return self._dimension

    @property
    def max_batch_size(self) -> int:
        return self.settings.max_batch_size

    @property
    def loaded(self) -> bool:
        return self._tokenizer is not None

    # -- lifecycle (the ModelRunner meanings) --------------------------------------------

    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    async def rebuild(self) -> None:
        """Reload the weights; the tokenizer stays, so admission goes on meanwhile."""
        self._model = None
        await asyncio.to_thread(self._load)

    async def close(self) -> None:
        self._model = None
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def _load(self) -> None:
        with model_source.LOAD_LOCK:
            self._load_weights()

    def _load_weights(self) -> None:
        import torch
        import transformers

        configure_progress()
        folder = resolve_model_path(self.deployment.model_id)
        progress = LoadProgress(what=f"embeddings model {folder}", phases=4)
        log.info("loading embeddings model %s on %s", folder, self.device)
        layout = read_layout(folder)
        source = str(layout.transformer)
        progress.phase("tokenizer")
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
        dtype = getattr(torch, self.settings.dtype)
        progress.phase("weights")
        model = transformers.AutoModel.from_pretrained(source, local_files_only=True, dtype=dtype)
        progress.phase(f"moving to {self.device}")
        model = model.to(self.device).eval()
        config = model.config
        positions = int(getattr(config, "max_position_embeddings", 0) or 0)
        limits = (positions, int(tokenizer.model_max_length), layout.max_seq_length or 0)
        declared = [n for n in limits if 0 < n <= _SANE_LIMIT]
        natural = min(declared) if declared else 512
        wanted = self.settings.max_input_tokens
        if wanted is not None and positions and wanted > positions:
            raise ValueError(
                f"runtime_config.max_input_tokens: {wanted} is over the model's "
                f"max_position_embeddings ({positions})"
            )
        self._torch, self.layout, self._tokenizer = torch, layout, tokenizer
        self._vocab_size = int(model.get_input_embeddings().num_embeddings)
        self._max_tokens = wanted or natural
        self._model = model
        progress.phase("a first forward (the embedding's dimension)")
        self._dimension = int(self._forward(model, [[tokenizer.cls_token_id or 0]]).shape[1])
        progress.done(f"dimension {self._dimension}")

    # -- admission -------------------------------------------------------------------------

    def tokenize(self, inputs: Sequence[str | Sequence[int]]) -> list[list[int]]:
        """Token ids per input, as fed to the model; RequestError (``input``) for an input over
        ``max_input_tokens``, an empty one, or a token id outside the vocabulary."""
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise RuntimeError("the embedding model is not loaded")
        texts = [(i, text) for i, text in enumerate(inputs) if isinstance(text, str)]
        ids: list[list[int]] = [[] if isinstance(x, str) else list(x) for x in inputs]
        if texts:
            encoded = tokenizer([t for _, t in texts], add_special_tokens=True, verbose=False)
            for (i, _), row in zip(texts, encoded["input_ids"], strict=True):
                ids[i] = list(row)
        for i, row in enumerate(ids):
            if not row:
                raise RequestError(f"input[{i}] is empty", param="input")
            if len(row) > self._max_tokens:
                raise RequestError(
                    f"This model's maximum input length is {self._max_tokens} tokens; "
                    f"input[{i}] has {len(row)} tokens. Please reduce the length of the input.",
                    param="input",
                    code="context_length_exceeded",
                )
            if min(row) < 0 or max(row) >= self._vocab_size:
                raise RequestError(
                    f"input[{i}]: token ids must be in [0, {self._vocab_size})", param="input"
                )
        return ids

    def count_tokens(self, inputs: Sequence[str | Sequence[int]]) -> list[int]:
        return [len(row) for row in self.tokenize(inputs)]

    def check_dimensions(self, dimensions: int | None) -> None:
        """``dimensions`` is allowed when it is the native size, or smaller on a matryoshka
        model; anything else is a 400 naming it."""
        if dimensions is None or dimensions == self.dimension:
            return
        if not self.settings.matryoshka:
            raise UnsupportedParameter(
                "dimensions", f"this model only produces {self.dimension} dimensions"
            )
        if not 1 <= dimensions <= self.dimension:
            raise UnsupportedParameter("dimensions", f"must be between 1 and {self.dimension}")

    # -- the work (a worker thread) ------------------------------------------------------

    def embed(
        self, inputs: Sequence[str | Sequence[int]], *, dimensions: int | None = None
    ) -> tuple[Vectors, list[int]]:
        """One float32 row per input, and the tokens each fed to the model."""
        self.check_dimensions(dimensions)
        model = self._model
        if model is None:
            raise ContextPoisoned("the embedding model is not loaded (closed or rebuilding)")
        ids = self.tokenize(inputs)
        step = self.settings.max_batch_size
        parts = [self._forward(model, ids[at : at + step]) for at in range(0, len(ids), step)]
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self.truncate(vectors, dimensions), [len(row) for row in ids]

    def truncate(self, vectors: Vectors, dimensions: int | None) -> Vectors:
        """Matryoshka: keep the first ``dimensions``; re-normalise when the model normalises,
        so a shortened vector keeps the unit norm the model promises."""
        if dimensions is None or dimensions == vectors.shape[1]:
            return vectors
        cut = np.ascontiguousarray(vectors[:, :dimensions])
        if self.layout is not None and self.layout.normalize:
            norms = np.linalg.norm(cut, axis=1, keepdims=True)
            cut = (cut / np.maximum(norms, 1e-12)).astype(np.float32)
        return cut

    def _forward(self, model: Any, ids: list[list[int]]) -> Vectors:
        torch = self._torch
        assert self.layout is not None
        pad, rows = torch.nn.utils.rnn.pad_sequence, [torch.tensor(row) for row in ids]
        input_ids = pad(rows, batch_first=True, padding_value=self._tokenizer.pad_token_id or 0)
        mask = pad([torch.ones_like(row) for row in rows], batch_first=True)  # right-padded
        try:
            with torch.inference_mode():
                out = model(
                    input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
                )
                hidden = out.last_hidden_state.float()
                pooled = _pool(torch, hidden, mask.to(hidden.device), self.layout.modes)
                if self.layout.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
                result: Vectors = pooled.cpu().numpy().astype(np.float32, copy=False)
        except (torch.OutOfMemoryError, MemoryError) as error:
            raise OutOfMemory(f"out of memory embedding {len(ids)} inputs") from error
        except RuntimeError as error:
            if "cuda" in str(error).lower() or "device" in str(error).lower():
                raise ContextPoisoned(f"device error: {error}") from error
            raise
        return result


def _pool(torch: Any, hidden: Any, mask: Any, modes: tuple[str, ...]) -> Any:
    """sentence-transformers' Pooling, for right-padded batches; modes are concatenated."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(hidden.masked_fill(weights == 0, -1e9).max(dim=1).values)
        elif mode == "mean":
            counts = weights.sum(dim=1).clamp(min=1e-9)
            parts.append((hidden * weights).sum(dim=1) / counts)
        else:  # lasttoken
            last = mask.sum(dim=1) - 1
            parts.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
