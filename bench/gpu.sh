#!/usr/bin/env bash
# The GPU check in one run (about 5 minutes on one H100/H200): the CUDA tests, the serving step at
# the real 0.6B and 1.7B sizes without HTTP (bench/gpu_check.py), then concurrent pcm streams over
# HTTP (bench/streams.py). Random weights, built on the spot. Each result is a JSON file in $OUT.
#
#   OUT=/tmp/gpu bash bench/gpu.sh            # on the GPU machine
#   GPU_DRY_RUN=1 OUT=/tmp/gpu bash bench/gpu.sh   # here: the same steps on the CPU, tiny sizes
#
# On the device machine of this workplace, wheels the image lacks travel in .whl/ (ignored by git,
# listed in .whl/INSTALL.txt) and are installed first; see docs/deployment.md "GPU".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if [ -z "${GPU_DRY_RUN:-}" ] && [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    # .whl/stub: an `av` that imports (PyAV's 36 MB wheel stays behind; pcm needs no PyAV)
    export PYTHONPATH="/tmp/site:$PWD/.whl/stub${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [ -n "${GPU_DRY_RUN:-}" ]; then
    DEVICE=cpu SMALL=tiny LARGE=tiny ROWS=16 BATCHES=1,8,16 CONC=1,4 FRAMES=12 CONTEXT=256
else
    DEVICE=cuda SMALL=real-0.6b LARGE=real-1.7b ROWS=256 BATCHES=1,8,32,64,128,256
    CONC=${GPU_CONCURRENCY:-1,8,32,64,128,256} FRAMES=50 CONTEXT=1024
fi
DATA=${GPU_DATA:-/tmp/gpu-data}
started=$(date +%s)
stage() { echo "== $1 ($(($(date +%s) - started)) s)"; }

stage "environment"
"$PY" - <<'PY' | tee "$OUT/env.txt"
import torch, transformers
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("transformers", transformers.__version__)
PY

[ -n "${GPU_SKIP_TESTS:-}" ] || {
stage "CUDA tests"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/cuda-tests.txt" | tail -15
}

stage "serving step, $SMALL"
timeout 150 "$PY" bench/gpu_check.py --dims "$SMALL" --device "$DEVICE" --rows "$ROWS" \
    --batches "$BATCHES" --context "$CONTEXT" --data-dir "$DATA" > "$OUT/check-small.json"
cat "$OUT/check-small.json"

stage "HTTP streams, $SMALL"
ENGINE_MAX_CONTEXT=$CONTEXT timeout 200 "$PY" bench/streams.py --models "$DATA/models-$SMALL" \
    --device "$DEVICE" --concurrency "$CONC" --frames "$FRAMES" --timeout 90 --budget 150 \
    --server-log "$OUT/server-small.log" > "$OUT/streams-small.json"
cat "$OUT/streams-small.json"

if [ -z "${GPU_SKIP_LARGE:-}" ]; then
    stage "serving step, $LARGE"
    timeout 150 "$PY" bench/gpu_check.py --dims "$LARGE" --device "$DEVICE" --rows 128 \
        --batches "${BATCHES%,256}" --context "$CONTEXT" --data-dir "$DATA" > "$OUT/check-large.json"
    cat "$OUT/check-large.json"
fi
stage "done"
