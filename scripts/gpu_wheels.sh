#!/usr/bin/env bash
# The wheels the GPU machine's python3 (3.12, manylinux x86-64, no network) lacks, downloaded here
# into .whl/ (git-ignored through .git/info/exclude); scripts/gpu_benchmark.sh installs them there
# into a temporary path. Versions: this project's pins (pyproject.toml and the venv).
#
# usage: scripts/gpu_wheels.sh            (then carry .whl/ with the run)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
WHEELS=(
    array-api-compat==1.16.0      # ffsolve.solvers.arrays
    jsonschema==4.26.0            # ffsolve.kit.record (the results record's schema)
    jsonschema-specifications==2025.9.1
    referencing==0.37.0
    rpds-py==2026.9.1             # compiled: the cp312 manylinux wheel
)
mkdir -p .whl
for spec in "${WHEELS[@]}"; do
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "$spec"
done
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
ls -1 .whl
