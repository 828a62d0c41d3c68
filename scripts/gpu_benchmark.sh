#!/usr/bin/env bash
# Paper-scale measurements on one GPU machine without network, in about 8 minutes:
#   MADE 2x512 on full MNIST (trained here, 3000 steps), PixelCNN++ at the paper's MNIST size
#   (nr_resnet 5, 40 filters, 10 mixtures, batch 16; trained here on full MNIST for 20,000 steps or
#   15 minutes, whichever comes first, unless a checkpoint is given; every sampler, cached
#   Jacobi-GS and GS-Jacobi at the paper's blocks),
#   DenseNet-201 speed mode (random weights, 224x224 inputs), RNN backprop at T = 100..10000,
#   and the paper's RNN quantity (training time of 200 SGD steps per backward method).
# Every benchmark runs its methods in one process on the same weights and noise, checks each
# against the sequential result, and times medians of repeats after warm-up (DESIGN.md §7).
#
# usage: scripts/gpu_benchmark.sh <folder containing MNIST/raw> [out dir] [pixelcnnpp checkpoint]
# JAX needs its CUDA wheels for the PixelCNN++ part: pip install 'jax[cuda12]==0.10.2'.
# Writes <out dir>/gpu_benchmark.json (all numbers, the GPU's name), one JSON per benchmark, and
# DenseNet's per-run records under <out dir>/densenet/.
set -euo pipefail
mnist=${1:?usage: scripts/gpu_benchmark.sh <folder containing MNIST/raw> [out dir] [pixelcnnpp checkpoint]}
out=${2:-results/gpu_benchmark}
pixel_ckpt=${3:-}
py=${PYTHON:-.venv/bin/python}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export FFSOLVE_PROGRESS=0 XLA_PYTHON_CLIENT_PREALLOCATE=false
[ -d "$mnist/MNIST/raw" ] || { echo "no MNIST at $mnist/MNIST/raw" >&2; exit 2; }
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'PyTorch sees no CUDA GPU')"

run() { local name=$1; shift; echo "== $name: $*" >&2; /usr/bin/env time -f "$name %e s" "$py" "$@"; }

run made benchmarks/made_benchmark.py --source folder --folder "$mnist" --steps 3000 \
    --device cuda --repeats 10 --out "$out/made.json"
if [ -n "$pixel_ckpt" ]; then pixel_stage=(--stage sample --checkpoint "$pixel_ckpt"); else pixel_stage=(--stage all); fi
run pixelcnnpp benchmarks/pixelcnnpp_paper_benchmark.py "${pixel_stage[@]}" --folder "$mnist" \
    --train-minutes 15 --train-steps 20000 --learning-rate 0.001 --eval-every 1000 --batch 16 \
    --device cuda --repeats 5 --out "$out/pixelcnnpp"
cp "$out/pixelcnnpp/records.json" "$out/pixelcnnpp.json"
run densenet benchmarks/densenet_benchmark.py --models densenet201 --size 224 --images 10 \
    --device cuda --repeats 5 --out "$out/densenet"
run rnn_backprop benchmarks/rnn_backprop_benchmark.py --lengths 100 1000 10000 --hidden 128 \
    --source folder --folder "$mnist" --device cuda --repeats 10 --out "$out/rnn_backprop.json"
run rnn_forward benchmarks/rnn_forward_benchmark.py --device cuda --threads 4 --repeats 5 \
    --methods sequential jacobi newton quasi_newton damped_newton --max-jacobian-gib 16 \
    --cases gru_T1000_H8 gru_T10000_H8 gru_T100000_H8 gru_T1000_H32 gru_T10000_H32 gru_T100000_H32 \
    gru_T1000_H64 gru_T10000_H64 gru_T100000_H64 gru_T10000_H32_jax gru_T100000_H64_jax --out "$out/rnn_forward"
# The library's recurrence solvers on their own (random GRU, batch 16): steps, time and exactness of
# every method against the loop at the long T; writes recurrence.md and recurrence.json.
run recurrence benchmarks/recurrence_benchmark.py --device cuda --frameworks torch jax \
    --T 10000 100000 --H 8 64 --tols 1e-5 0 --repeats 3 --max-jacobian-gib 16 \
    --max-damped-flops 1e13 --max-call-s 10 --out "$out/recurrence.md"
# The paper's RNN quantity: 200 SGD steps per backward method, config/paper.yaml's settings, every
# run timed in one process (records under <out dir>/rnn_backprop_train/<run>/metrics.json). The
# harness checks that every timed repeat trains bit-for-bit the same weights; a GPU library that is
# not deterministic there stops this part (status kept for the end), not the merge below.
train_status=0
run rnn_backprop_train benchmarks/rnn_backprop_benchmark.py --train --source folder --folder "$mnist" \
    --device cuda --out "$out/rnn_backprop_train/runs.json" || train_status=$?

"$py" - "$out" <<'PY'
import json, subprocess, sys
from pathlib import Path
out = Path(sys.argv[1])
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
merged = {"gpu": gpu, "benchmarks": {p.stem: json.loads(p.read_text())
                                     for p in sorted(out.glob("*.json")) if p.stem != "gpu_benchmark"}}
# DenseNet writes one record per run (results contract): <out>/densenet/<model>/<run>/metrics.json
merged["benchmarks"]["densenet"] = {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
                                    for p in sorted(out.glob("densenet/*/*/metrics.json"))}
train = out / "rnn_backprop_train" / "runs.json"
if train.exists():
    merged["benchmarks"]["rnn_backprop_train"] = json.loads(train.read_text())
# rnn_forward too: <out>/rnn_forward/<case>/<run>/metrics.json
merged["benchmarks"]["rnn_forward"] = {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
                                       for p in sorted(out.glob("rnn_forward/*/*/metrics.json"))}
(out / "gpu_benchmark.json").write_text(json.dumps(merged, indent=2))
print(f"wrote {out / 'gpu_benchmark.json'} ({gpu})")
PY
exit "$train_status"
