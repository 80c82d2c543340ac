#!/usr/bin/env bash
# The checks issue #14 leaves for a GPU, as one prepared command for the `device` tool's machine (CUDA, its own
# python3 with torch and triton; nothing can be fetched there). CI never runs this.
#
#   here, once:  bash benchmarks/gpu_session.sh wheels   # what that image lacks for kernelhook, into .whl/ (ignored)
#   there:       bash benchmarks/gpu_session.sh run      # run with carry [".whl"]; results land in $OUT
#
# run: the GPU tests (the Triton build through the hook; under torch.compile(fullgraph=True); kernelize(measure=True)
# deciding on the GPU and recalling it), then benchmarks/bench_rmsnorm_gpu.py (throughput chart, and the decisions
# measure=True keeps on this GPU). Every log, the chart and the JSON come back from $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

# huggingface_hub 2.x and what it needs beyond what the GPU image has (its 1.x hub, no httpx2).
WHEELS="huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 click==8.5.1 hf-xet==1.8.0"

case "${1:-run}" in
wheels)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # shellcheck disable=SC2086
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $WHEELS
    ;;
run)
    OUT=${OUT:-/tmp/gpu-session}
    mkdir -p "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "no wheels: run 'bash benchmarks/gpu_session.sh wheels' here first" >&2; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    {
        nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
        python3 -c "import sys, torch, triton, huggingface_hub as h; print(sys.version.split()[0], 'torch', \
torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'huggingface_hub', h.__version__)"
    } 2>&1 | tee "$OUT/machine.txt"
    status=0
    timeout 200 python3 -m pytest -q -p no:cacheprovider -rA tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log" || status=1
    timeout 200 python3 benchmarks/bench_rmsnorm_gpu.py --png "$OUT/rmsnorm_gpu.png" --json "$OUT/rmsnorm_gpu.json" \
        2>&1 | tee "$OUT/bench_rmsnorm_gpu.log" || status=1
    exit $status
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh wheels|run" >&2
    exit 2
    ;;
esac
