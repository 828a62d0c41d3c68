#!/usr/bin/env bash
# Paper-scale GPU numbers in one call (about 8 minutes on one H100): every experiment as a part
# with its own time cap, everything written under --out (gpu_benchmark.json, .md, .log and, when
# trained here, the PixelCNN++ checkpoint). The work is done by benchmarks/gpu_benchmark.py (its
# docstring lists the parts, sizes and caps); this wrapper only prepares the Python it runs on.
#
#   scripts/gpu_benchmark.sh --mnist <folder containing MNIST/raw> --out <dir> [--pixelcnnpp-checkpoint F]
#   scripts/gpu_benchmark.sh --smoke --out /tmp/gpu_smoke        # CPU, tiny sizes, ~2 min
#
# On a bare machine (python3 with torch, jax, ... but without array-api-compat and jsonschema, and
# no network), carry the wheel set built here by scripts/gpu_wheels.sh in .whl/: it is installed
# into /tmp/ffsolve-site and put on PYTHONPATH. PYTHON picks the interpreter (default python3).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
site=/tmp/ffsolve-site
shopt -s nullglob
wheels=("$repo"/.whl/*.whl)
if [ ${#wheels[@]} -gt 0 ] && ! "$py" -c 'import array_api_compat, jsonschema' 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "${wheels[@]}" || echo "gpu_benchmark.sh: installing .whl/ failed; the check below names what is missing" >&2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$repo/benchmarks/gpu_benchmark.py" "$@"
