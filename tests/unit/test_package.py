"""The package itself: light import, console script, error tree."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import inference_runtime
from inference_runtime import errors
from inference_runtime.cli.main import main

HEAVY = ("torch", "transformers", "ray", "vllm")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fake.yaml"


def test_import_stays_light() -> None:
    code = (
        "import sys, inference_runtime, inference_runtime.actors, inference_runtime.testing\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import inference_runtime pulled in: {out}"


def test_version() -> None:
    assert inference_runtime.__version__
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0


def test_console_script_help_and_version() -> None:
    for flag in ("--help", "--version"):
        result = subprocess.run(
            [sys.executable, "-m", "inference_runtime.cli.main", flag],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "inference-runtime" in result.stdout


def test_error_tree_retryable_split() -> None:
    assert issubclass(errors.MailboxFull, errors.InferenceRuntimeError)
    assert errors.MailboxFull.retryable
    assert errors.ActorStopped.retryable
    assert errors.AskTimeout.retryable
    assert not errors.ActorInitializationError.retryable
    assert not errors.InvalidActorName.retryable
    assert issubclass(errors.AskTimeout, TimeoutError)
    for name in ("InvalidActorName", "ActorNameTaken", "MailboxFull", "ActorStopped"):
        assert name in (errors.__doc__ or ""), f"{name} missing from the drawn tree"


def test_serve_takes_an_optional_ray_address() -> None:
    from inference_runtime.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve"]).ray is None
    assert parser.parse_args(["serve", "--ray"]).ray == ""
    assert parser.parse_args(["serve", "--ray", "ray://head:10001"]).ray == "ray://head:10001"


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed")
def test_serve_ray_without_ray_says_how_to_install_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--ray", "--config", str(EXAMPLE), "--port", "0"]) == 2
    assert "pip install 'inference-runtime[ray]'" in capsys.readouterr().err
