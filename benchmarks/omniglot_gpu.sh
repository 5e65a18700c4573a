#!/usr/bin/env bash
# Issue 14's GPU checks in one call: the test suite where CUDA is present and the
# Omniglot one-shot rows trained on the GPU (benchmarks/omniglot_one_shot.py
# --device cuda). Made for a lent GPU machine with PyTorch but without skorch:
# the wheels it lacks travel in .whl/ and the data in .devdata/shared/data (see
# docs/benchmarks_omniglot.rst, "On a GPU"). Each step runs under `timeout` and
# a step that would start after the deadline is skipped, so the call ends in time;
# logs and the JSON lines land in OUT.
#
#   bash benchmarks/omniglot_gpu.sh OUT [DEADLINE_SECONDS]
#
# All the steps take about 11 minutes on an H100, more than one call of a lent
# machine: run a part per call with STEPS, e.g. STEPS="tests final resnet12-affine
# resnet12-affine-elastic resnet12-ensemble" then STEPS="final-resnet12".
set -u
out=${1:?usage: omniglot_gpu.sh OUT [DEADLINE_SECONDS]}
deadline=${2:-540}
mkdir -p "$out"
start=$SECONDS
export PYTHONUNBUFFERED=1
export SKFEWSHOT_SHARED_DATA=${SKFEWSHOT_SHARED_DATA:-$PWD/.devdata/shared/data}
data_dir=$SKFEWSHOT_SHARED_DATA/omniglot
py=${PYTHON:-python3}  # the python that holds torch

step() {  # step NAME LIMIT_SECONDS COMMAND...: log in OUT/NAME.log, rc and time here
    local name=$1 limit=$2 left
    shift 2
    if [[ -n ${STEPS:-} && " $STEPS " != *" $name "* ]]; then
        return  # STEPS="final resnet12-affine" runs only those
    fi
    left=$((deadline - (SECONDS - start)))
    ((limit > left)) && limit=$left
    if ((limit < 30)); then
        echo "== $name: skipped (${left}s left)"
        return
    fi
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "== $name: rc=$? in $((SECONDS - t0))s (limit ${limit}s)"
    tail -n 4 "$out/$name.log"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$py" -c 'import sys, torch, sklearn, numpy, skorch; print(sys.version.split()[0],
"torch", torch.__version__, "sklearn", sklearn.__version__, "numpy",
numpy.__version__, "skorch", skorch.__version__, "cuda", torch.cuda.is_available())'
    nproc
} >"$out/env.log" 2>&1
cat "$out/env.log"

# DEVICE and BENCH_ARGS (e.g. "--epochs 1 --episodes 20") serve a smoke run elsewhere
bench=("$py" benchmarks/omniglot_one_shot.py --device "${DEVICE:-cuda}" --threads 4
    --data-dir "$data_dir" ${BENCH_ARGS:-})
# the whole suite with CUDA present (device="auto" paths on the GPU) first: each
# test named as it ends (-v), so a log cut at the limit still says which failed;
# one thread per worker: 8 and 15 workers with torch's default of 16 threads had not
# finished it after 240 and 265 s; -n 12 with one thread each took 82 s on an H100
timeout_opt=()
"$py" -c 'import pytest_timeout' 2>/dev/null && timeout_opt=(--timeout 120)
OMP_NUM_THREADS=1 step tests 240 "$py" -m pytest -p no:cacheprovider -n 12 -v \
    -rfE "${timeout_opt[@]}"
grep -E "^(FAILED|ERROR)|^\[gw[0-9]+\] .*(FAILED|ERROR)" "$out/tests.log" | head -40
# the library's recipe (three Conv4 members then: 73 s of training on an H100
# on 2026-11-27, 89 s for the step): its time on the GPU, scored also with the
# base classes' whitening, the recipe's evaluation since 2026-11-29
step final 240 "${bench[@]}" --config final --whiten 10
# ResNet12, too slow for the CPU budget (13x Conv4 per step), and its ensemble
step resnet12-affine 120 "${bench[@]}" --config resnet12-affine
step resnet12-affine-elastic 120 "${bench[@]}" --config resnet12-affine-elastic
step resnet12-ensemble 60 "${bench[@]}" \
    --ensemble resnet12-affine resnet12-affine-elastic --whiten 10
# the same recipe with ResNet12 members (182 s of training on an H100, 204 s
# for the step)
step final-resnet12 300 "${bench[@]}" --config final-resnet12 --whiten 10
cp benchmarks/_artifacts/omniglot_one_shot.jsonl "$out/" 2>/dev/null
echo "== total $((SECONDS - start))s"
