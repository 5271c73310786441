"""``TransformersRunner`` (``runtime: transformers``): a Hugging Face causal LM, step by step.

Each engine step runs at most two forwards in a worker thread: one batched decode over every
running sequence (one new token each, each at its own position in the shared ``SlotCache``), and
one batched prefill of the sequences joining at this step, whose KV lands in fresh rows of the
same cache, so that they decode with the others from the next step on. Nothing waits for another
request to finish.

``runtime_config``: ``dtype`` (auto | float32 | bfloat16 | float16; auto is bfloat16 where the
device supports it), ``max_model_len`` (defaults to the model's), ``kv_rows`` and ``kv_length``
(initial KV buffer shape; both grow on demand).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from inference_runtime.engine.runner import RunnerInfo, ScheduledBatch, TokenOutput
from inference_runtime.engine.runners import model_source
from inference_runtime.engine.runners.chat_prompt import encode_request
from inference_runtime.engine.runners.detokenizer import IncrementalDetokenizer
from inference_runtime.engine.runners.kv_slots import SlotCache
from inference_runtime.engine.runners.load_progress import LoadProgress
from inference_runtime.engine.runners.sampling import SamplerState, new_state, sample
from inference_runtime.errors import ContextPoisoned, OutOfMemory
from inference_runtime.types import Deployment, EngineRequest

log = logging.getLogger("inference_runtime.engine")
_SETTINGS = {"dtype": "auto", "max_model_len": None, "kv_rows": 8, "kv_length": 256}
_CAPABILITIES = frozenset(
    {"temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty",
     "logprobs", "top_logprobs"}
)  # fmt: skip


class _Seq:
    __slots__ = ("detok", "row_owner", "sampler")

    def __init__(self, detok: IncrementalDetokenizer, sampler: SamplerState) -> None:
        self.detok, self.sampler, self.row_owner = detok, sampler, ""


class TransformersRunner:
    def __init__(self, deployment: Deployment, *, device: str = "cpu") -> None:
        unknown = set(deployment.runtime_config) - set(_SETTINGS)
        if unknown:
            raise ValueError(
                f"runtime_config: unknown setting(s) for runtime 'transformers': {sorted(unknown)};"
                f" known: {sorted(_SETTINGS)}"
            )
        self.config: dict[str, Any] = {**_SETTINGS, **deployment.runtime_config}
        self.source = model_source.resolve(deployment.model_id)
        self.device = torch.device(device)
        self.dtype = _pick_dtype(str(self.config["dtype"]), self.device)
        self.model: Any = None
        self.tokenizer: Any = None
        self.cache: SlotCache | None = None
        self.seqs: dict[str, _Seq] = {}
        self.eos_ids: frozenset[int] = frozenset()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner")
        self._info: RunnerInfo | None = None
        self._cache_kwarg = "cache"
        self._keeps_logits = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def info(self) -> RunnerInfo:
        if self._info is None:  # before load: what we know without weights
            return RunnerInfo(
                runtime="transformers",
                transport="local",
                max_context=int(self.config["max_model_len"] or 2048),
                capabilities=_CAPABILITIES,
            )
        return self._info

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    async def rebuild(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._reset_and_load)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._unload)
        self._executor.shutdown(wait=False)

    def _load(self) -> None:
        with model_source.LOAD_LOCK:
            self._load_weights()

    def _reset_and_load(self) -> None:
        self._unload()
        self._load()

    def _unload(self) -> None:
        self.model, self.cache = None, None
        self.seqs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _load_weights(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_source.configure_progress()
        source = self.source
        converted = model_source.converted_folder(source)
        folder, gguf = (converted, None) if converted else (source.folder, source.gguf_file)
        where = f"{folder}/{gguf}" if gguf else str(folder)
        progress = LoadProgress(what=where, phases=5 if gguf else 4)
        log.info(
            "loading %s on %s (%s)", where, self.device, str(self.dtype).removeprefix("torch.")
        )
        kwargs: dict[str, Any] = {"local_files_only": True}
        if gguf:
            kwargs["gguf_file"] = gguf
        progress.phase("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        progress.phase(
            "weights (dequantizing the GGUF file: first start only)" if gguf else "weights"
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, dtype=self.dtype, attn_implementation="sdpa", **kwargs
        )
        if gguf:
            progress.phase("caching the converted weights for the next start")
            model_source.save_converted(source, model, tokenizer)
        progress.phase(f"moving to {self.device}")
        model.to(self.device).eval()
        self.model, self.tokenizer = model, tokenizer
        # transformers renamed past_key_values to cache during 5.x; pass it by its current name
        forward = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward else "past_key_values"
        self._keeps_logits = "logits_to_keep" in forward
        progress.phase("KV cache")
        self._build_cache()
        self.eos_ids = _eos_ids(model, tokenizer)
        cfg = model.config
        limit = int(getattr(cfg, "max_position_embeddings", 2048))
        max_len = int(self.config["max_model_len"] or limit)
        self._info = RunnerInfo(
            runtime="transformers",
            transport="local",
            max_context=min(max_len, limit),
            capabilities=_CAPABILITIES,
            max_token_chars=_max_token_chars(tokenizer),
        )
        params = sum(p.numel() for p in model.parameters())
        progress.done(f"{params} parameters")

    def _build_cache(self) -> None:
        cfg = self.model.config
        heads = cfg.num_attention_heads
        self.cache = SlotCache(
            layers=cfg.num_hidden_layers,
            kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            dtype=self.dtype,
            device=self.device,
            rows=int(self.config["kv_rows"]),
            length=int(self.config["kv_length"]),
        )

    # -- requests --------------------------------------------------------------------------

    def encode(self, request: EngineRequest) -> tuple[list[int], str]:
        return encode_request(self.tokenizer, request)

    def release(self, seq_ids: Sequence[str]) -> None:
        cache = self.cache
        with torch.inference_mode():
            for seq_id in seq_ids:
                if self.seqs.pop(seq_id, None) is None or cache is None:
                    continue
                cache.free(cache.owner.index(seq_id))

    # -- one step ------------------------------------------------------------------------

    async def execute(self, batch: ScheduledBatch) -> dict[str, TokenOutput]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._step, batch)

    def _step(self, batch: ScheduledBatch) -> dict[str, TokenOutput]:
        if self.model is None or self.cache is None:
            raise ContextPoisoned("the model is not loaded")
        self.release(batch.released)
        decodes = [s for s in batch.sequences if not s.prefill]
        prefills = [s for s in batch.sequences if s.prefill]
        try:
            with torch.inference_mode():
                out = self._decode(decodes) if decodes else {}
                if prefills:
                    out.update(self._prefill(prefills))
        except (torch.OutOfMemoryError, MemoryError) as error:
            culprits = tuple(s.seq_id for s in prefills) or tuple(s.seq_id for s in decodes)
            raise OutOfMemory(f"out of memory: {error}", sequence_ids=culprits) from error
        except RuntimeError as error:
            if "cuda" in str(error).lower() or "device" in str(error).lower():
                raise ContextPoisoned(f"device error: {error}") from error
            raise
        return out

    def _prefill(self, seqs: list[Any]) -> dict[str, TokenOutput]:
        cache = self.cache
        assert cache is not None
        lengths = [len(s.prompt_ids) for s in seqs]
        longest = max(lengths)
        rows = []
        for s in seqs:
            self.seqs[s.seq_id] = _Seq(
                IncrementalDetokenizer(self.tokenizer), new_state(s.sampling, device=self.device)
            )
            rows.append(cache.allocate(s.seq_id))
        # Left-padded, so every row's last prompt token is the last input and only that
        # position's logits are computed. Cache slots follow the sequence, not the input:
        # row r's real tokens go to slots 0..P_r-1, its pads to the (still unused) slots after.
        pad_id = self.tokenizer.pad_token_id or 0
        n = len(seqs)
        lens = torch.tensor(lengths)
        pads = longest - lens
        ids = torch.tensor([[pad_id] * (longest - len(s.prompt_ids)) + s.prompt_ids for s in seqs])
        index = torch.arange(longest).expand(n, longest)
        real = index >= pads[:, None]
        positions = torch.where(real, index - pads[:, None], 0)
        write = torch.where(real, positions, lens[:, None] + index)
        cache.reserve(int((lens + pads).max()) + 1)
        query_pos = torch.where(real, positions, 0)
        mask = torch.arange(longest)[None, None, :] <= query_pos[:, :, None]
        cache.begin(torch.tensor(rows), write, longest)
        logits = self._forward(ids, positions, mask[:, None], keep_last=True)[:, -1]
        for row, length in zip(rows, lengths, strict=True):
            cache.lengths[row] = length
        return self._choose(seqs, logits)

    def _decode(self, seqs: list[Any]) -> dict[str, TokenOutput]:
        cache = self.cache
        assert cache is not None
        rows = [cache.owner.index(s.seq_id) for s in seqs]
        positions = torch.tensor([cache.lengths[r] for r in rows])
        kv_len = int(positions.max()) + 1
        cache.reserve(kv_len)
        ids = torch.tensor([[s.output_ids[-1]] for s in seqs])
        row_index: torch.Tensor | slice = torch.tensor(rows)
        if rows == list(range(len(rows))):
            row_index = slice(0, len(rows))
        mask = (torch.arange(kv_len)[None, :] <= positions[:, None])[:, None, None, :]
        cache.begin(row_index, positions[:, None], kv_len)
        logits = self._forward(ids, positions[:, None], mask)[:, -1]
        for r in rows:
            cache.lengths[r] += 1
        return self._choose(seqs, logits)

    def _forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        keep_last: bool = False,
    ) -> Any:
        extra: dict[str, Any] = {self._cache_kwarg: self.cache}
        if keep_last and self._keeps_logits:
            extra["logits_to_keep"] = 1
        output = self.model(
            input_ids=ids.to(self.device),
            position_ids=positions.to(self.device),
            attention_mask=mask.to(self.device),
            use_cache=True,
            **extra,
        )
        return output.logits.float()

    def _choose(self, seqs: list[Any], logits: torch.Tensor) -> dict[str, TokenOutput]:
        states = [self.seqs[s.seq_id].sampler for s in seqs]
        choices = sample(logits, states)
        decode = self.tokenizer.decode
        out: dict[str, TokenOutput] = {}
        for s, choice in zip(seqs, choices, strict=True):
            eos = choice.token_id in self.eos_ids
            text = "" if eos else self.seqs[s.seq_id].detok.push(choice.token_id)
            logprob_fields: dict[str, Any] = {}
            if choice.logprob is not None:
                logprob_fields = {
                    "logprob": choice.logprob,
                    "top_logprobs": tuple((decode([t]), lp) for t, lp in choice.top),
                    "token_text": decode([choice.token_id]),
                }
            out[s.seq_id] = TokenOutput(
                token_id=choice.token_id, text=text, eos=eos, **logprob_fields
            )
        return out

    @property
    def live_sequences(self) -> int:
        return len(self.seqs)


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if _cpu_has_bf16() else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"runtime_config.dtype: {name!r} is not one of auto, {', '.join(dtypes)}")
    return dtypes[name]


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def _max_token_chars(tokenizer: Any) -> int | None:
    """The longest token of the vocabulary, as written there: byte-level BPE writes one
    character per byte and SentencePiece one per character (its byte tokens, ``<0xE3>``, are
    longer than what they stand for), so no token decodes to more characters than this."""
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return None
    return max(map(len, vocab), default=0) or None
