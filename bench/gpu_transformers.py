"""GPU check of the transformers runner (run on a machine with CUDA; not a test).

1. Correctness on ``cuda:0`` (float32): greedy tokens equal ``model.generate``, alone, with
   unequal prompts prefilled in one step, and with a request joining mid-flight.
2. Speed (bfloat16): a SmolLM2-135M-shaped Llama with random weights (no download), our
   step-level continuous batching against a static ``model.generate`` batch, at batch sizes
   1, 8, 32, 64, both producing 64 tokens per sequence. Same process, same GPU, one run.

    PYTHONPATH=src python bench/gpu_transformers.py [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from inference_runtime.engine.runner import ScheduledBatch, ScheduledSequence
from inference_runtime.engine.runners.transformers import TransformersRunner
from inference_runtime.types import Deployment, SamplingParams
from support.tiny_llama import build_tiny_llama

GREEDY = SamplingParams(temperature=0.0)
DEVICE = "cuda:0"


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def deployment(folder: Path, dtype: str) -> Deployment:
    return Deployment(
        name="check", runtime="transformers", model=str(folder), runtime_config={"dtype": dtype}
    )


def reference(runner: TransformersRunner, ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = runner.model.generate(
            torch.tensor([ids], device=runner.device),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
    return [int(t) for t in out[0, len(ids) :]]


async def run_steps(runner: TransformersRunner, seqs: list[ScheduledSequence], steps: int) -> None:
    for _ in range(steps):
        out = await runner.execute(ScheduledBatch(sequences=seqs))
        for s in seqs:
            s.output_ids.append(out[s.seq_id].token_id)
            s.prefill = False


def new_seq(seq_id: str, ids: list[int]) -> ScheduledSequence:
    return ScheduledSequence(
        seq_id=seq_id, prompt_ids=ids, output_ids=[], sampling=GREEDY, prefill=True
    )


async def correctness(folder: Path) -> dict[str, Any]:
    runner = TransformersRunner(deployment(folder, "float32"), device=DEVICE)
    await runner.load()
    tok = runner.tokenizer
    prompts = ["a", "the quick brown fox jumps over", "what is the capital of"]
    seqs = [new_seq(str(i), tok(p)["input_ids"]) for i, p in enumerate(prompts)]
    await run_steps(runner, seqs, 16)
    batch_ok = all(s.output_ids == reference(runner, s.prompt_ids, 16) for s in seqs)
    runner.release([s.seq_id for s in seqs])
    first = new_seq("first", tok("a journey of")["input_ids"])
    await run_steps(runner, [first], 5)
    late = new_seq("late", tok("actors carry")["input_ids"])
    await run_steps(runner, [first, late], 20)
    join_ok = first.output_ids == reference(runner, first.prompt_ids, 25) and (
        late.output_ids == reference(runner, late.prompt_ids, 20)
    )
    await runner.close()
    return {"batch_prefill_equal": batch_ok, "join_mid_flight_equal": join_ok}


def smollm2_shaped(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tiny_llama(folder)  # for its tokenizer
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


async def speed(folder: Path, batches: list[int], new_tokens: int) -> list[dict[str, Any]]:
    runner = TransformersRunner(deployment(folder, "bfloat16"), device=DEVICE)
    await runner.load()
    runner.eos_ids = frozenset()  # random weights: never stop early
    rows = []
    prompt = list(range(5, 5 + 128))
    for batch in batches:
        seqs = [new_seq(f"{batch}-{i}", prompt) for i in range(batch)]
        await run_steps(runner, seqs, 4)  # warm-up
        runner.release([s.seq_id for s in seqs])
        seqs = [new_seq(f"{batch}-m{i}", prompt) for i in range(batch)]
        sync()
        started = time.perf_counter()
        await run_steps(runner, seqs, new_tokens)
        sync()
        ours = batch * new_tokens / (time.perf_counter() - started)
        runner.release([s.seq_id for s in seqs])
        ids = torch.tensor([prompt] * batch, device=DEVICE)
        with torch.inference_mode():
            runner.model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
            sync()
            started = time.perf_counter()
            runner.model.generate(
                ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
            )
            sync()
        static = batch * new_tokens / (time.perf_counter() - started)
        rows.append(
            {
                "batch": batch,
                "ours_tok_s": round(ours, 1),
                "generate_tok_s": round(static, 1),
                "ratio": round(ours / static, 3),
            }
        )
        print(rows[-1], flush=True)
    await runner.close()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_transformers.json")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--batches", default="1,8,32,64")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "cpu",
        "torch": torch.__version__,
    }
    import transformers

    result["transformers"] = transformers.__version__
    with tempfile.TemporaryDirectory() as tmp:
        result["correctness"] = await correctness(build_tiny_llama(Path(tmp) / "tiny"))
        print(result["correctness"], flush=True)
        result["speed"] = await speed(
            smollm2_shaped(Path(tmp) / "s2"),
            [int(b) for b in args.batches.split(",")],
            args.tokens,
        )
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
