"""Paper-scale GPU numbers in one call, within one borrowing of the GPU machine (8 minutes).

Every experiment is one *part*, a subprocess of this Python running one of the benchmark scripts
in ``benchmarks/`` with its own wall-time cap (the subprocess's timeout):

* ``made``: MADE 2x512 trained on full MNIST (3000 steps), every sampler on a batch of 100;
* ``densenet``: DenseNet-201 speed mode (random weights, 224x224 inputs);
* ``rnn_backprop``: RNN backprop at T = 100, 1000, 10000 (hidden 128);
* ``rnn_forward``: random GRUs at T = 10,000 and 100,000 (H 8, 64; PyTorch and JAX);
* ``recurrence``: the library's recurrence solvers at T = 10,000 and 100,000 (JAX, then PyTorch);
* ``pixelcnnpp_train``: PixelCNN++ at the paper's MNIST size, trained for a bounded time (or
  skipped when ``--pixelcnnpp-checkpoint`` is given; its time then goes to sampling);
* ``pixelcnnpp_sample``: that model sampled by every method on a batch of 16.

A part that fails or hits its cap is recorded as such (exit status, seconds, the last lines of its
log, whatever JSON it had written) and the others still run. The parts' own output folders live in
a temporary directory; ``--out`` receives at most four files, each far below 16 MiB:
``gpu_benchmark.json`` (the device, the commands, per-part status, seconds and records),
``gpu_benchmark.md`` (one table: iterations, times and ratios against both sequential baselines),
``gpu_benchmark.log`` (every part's log) and, when this run trained one, the PixelCNN++
checkpoint ``pixelcnnpp_model.msgpack`` (pass it back with ``--pixelcnnpp-checkpoint``).

Before any part runs, every third-party package the parts' code imports (statically: the library
``src/ffsolve`` and the parts' scripts) must be importable; otherwise this stops with one message
naming every missing one and the command that builds the wheel set (``scripts/gpu_wheels.sh``).

    scripts/gpu_benchmark.sh --mnist ../data --out results/gpu     # on the GPU machine
    scripts/gpu_benchmark.sh --smoke --out /tmp/gpu_smoke           # CPU, tiny sizes, ~2 min

``--smoke`` runs the same parts through the same code with tiny sizes on the CPU, on the MNIST
test split shipped in the repository (no download), and writes the same files.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "src" / "ffsolve"
WHEEL_COMMAND = "scripts/gpu_wheels.sh   (here, with network; then carry .whl/ to the GPU machine)"

# What the GPU machine's python3 (3.12) already has, by distribution name (it has more; these are
# the ones this code may import). Other versions than our pins.
GPU_MACHINE_PACKAGES = (
    "torch", "torchvision", "jax", "flax", "optax", "numpy", "matplotlib", "scikit-learn", "pyyaml",
    "tqdm", "threadpoolctl", "attrs", "typing-extensions", "pytest", "pandas", "scipy",
)
# What it lacks and gets as wheels carried in .whl/ (scripts/gpu_wheels.sh pins the versions).
WHEEL_PACKAGES = ("array-api-compat", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py")
# Distribution name -> top-level import name, where they differ beyond '-' -> '_'.
IMPORT_NAMES = {
    "pyyaml": "yaml", "scikit-learn": "sklearn", "pillow": "PIL", "absl-py": "absl",
    "array-api-compat": "array_api_compat", "rpds-py": "rpds", "typing-extensions": "typing_extensions",
    "orbax-checkpoint": "orbax",
}
# Imported by the scanned code but never on a path the parts run, so the GPU machine may lack them.
ALLOWED_UNCOVERED = {
    "snakemake": "benchmarks/rnn_backprop_benchmark.py imports it inside config_settings, for "
                 "--train/--solve only; no part passes either (the 200-SGD-step training is dropped)",
    "papermill": "ffsolve.workflow.notebooks (imported inside its function): the workflow's notebook rules only",
    "playwright": "ffsolve.workflow.report_check (imported inside its function): the report page check only",
}

# The sampler runs of the PixelCNN++ part: pixelcnnpp_paper_benchmark's defaults without the
# uncached jacobi_gs (its solve path takes seconds per block: 70 s for one tiny-model sample on
# CPU; the paper's Jacobi-GS ran on a cached model, which jacobi_gs_cache is).
PIXEL_METHODS = ["sequential", "sequential_cache", "sequential_band_cache", "jacobi", "jacobi_gs_cache",
                 "gs_jacobi", "gs_jacobi_cache"]
MAX_OUT_FILES, MAX_FILE_BYTES = 8, 16 * 2**20
LOG_TAIL_BYTES = 1 * 2**20       # per part, in gpu_benchmark.log
RECORD_FILE_BYTES = 2 * 2**20    # a part's JSON file larger than this is left out of the merge


def import_name(dist: str) -> str:
    return IMPORT_NAMES.get(dist, dist.replace("-", "_"))


COVERED = {import_name(d): d for d in GPU_MACHINE_PACKAGES + WHEEL_PACKAGES}


@dataclass
class Part:
    name: str
    script: str                   # benchmarks/<file>.py
    args: list[str]
    cap_s: float
    folder: Path                  # the part's own output folder (in the temporary directory)
    collect: tuple[str, ...]      # globs under folder: the JSON records merged into the result
    skip: str | None = None
    result: dict = field(default_factory=dict)

    def command(self) -> list[str]:
        return [sys.executable, self.script, *self.args]


# ---- the import check -------------------------------------------------------------------------

def scanned_files(scripts) -> list[Path]:
    """The code the parts run: the whole library and the parts' scripts."""
    return sorted(LIBRARY.rglob("*.py")) + [REPO / s for s in scripts]


def third_party_imports(paths) -> dict[str, list[tuple[str, bool]]]:
    """Top-level module -> [(file, imported inside a function)] for every absolute import in
    ``paths`` that is neither the standard library nor ``ffsolve``."""
    found: dict[str, list[tuple[str, bool]]] = {}

    def visit(node, lazy, path):
        for child in ast.iter_child_nodes(node):
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "ffsolve" and top != "__future__":
                    found.setdefault(top, []).append((str(path.relative_to(REPO)), lazy))
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)), path)

    for path in paths:
        visit(ast.parse(Path(path).read_text(), str(path)), False, Path(path))
    return found


def missing_packages(scripts) -> list[str]:
    """Every package the parts' code imports that this Python cannot import, as 'dist (module)'."""
    needed = sorted(set(third_party_imports(scanned_files(scripts))) - set(ALLOWED_UNCOVERED))
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    # The carried wheels' own dependencies (attrs, rpds, typing_extensions...) show up on import.
    for module in [import_name(d) for d in WHEEL_PACKAGES]:
        if module in missing or module not in needed:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            missing.append(getattr(e, "name", None) or module)
    return [f"{COVERED.get(m, m)} ({m})" if COVERED.get(m, m) != m else m
            for m in sorted(set(missing))]


# ---- the plan ---------------------------------------------------------------------------------

def plan(args, work: Path) -> list[Part]:
    """The parts, their arguments and caps (full mode: the sum of the caps is 450 s)."""
    smoke = args.smoke
    dev = args.device or ("cpu" if smoke else "cuda")
    data = ["--source", "embedded"] if smoke else ["--source", "folder", "--folder", str(args.mnist)]
    quick = ["--repeats", "1", "--warmup", "0"]
    cap = (lambda full: args.smoke_cap_s) if smoke else (lambda full: full)
    w = {name: work / name for name in ("made", "densenet", "rnn_backprop", "rnn_forward",
                                        "recurrence", "pixelcnnpp")}
    parts = [
        Part("made", "benchmarks/made_benchmark.py", [
            *data, "--device", dev, "--out", str(w["made"] / "made.json"),
            *(["--steps", "10", "--hidden", "32", "32", "--batch", "4", *quick] if smoke else
              ["--steps", "3000", "--hidden", "512", "512", "--batch", "100", "--repeats", "5"]),
        ], cap(45), w["made"], ("made.json",)),
        Part("densenet", "benchmarks/densenet_benchmark.py", [
            "--models", "densenet201", "--batch201", "1", "--device", dev, "--out", str(w["densenet"]),
            *(["--size", "32", *quick] if smoke else ["--size", "224", "--repeats", "3", "--warmup", "1"]),
        ], cap(50), w["densenet"], ("*/*/metrics.json",)),
        Part("rnn_backprop", "benchmarks/rnn_backprop_benchmark.py", [
            *data, "--device", dev, "--out", str(w["rnn_backprop"] / "rnn_backprop.json"),
            *(["--lengths", "100", "1000", "--hidden", "16", *quick] if smoke else
              ["--lengths", "100", "1000", "10000", "--hidden", "128", "--repeats", "5"]),
        ], cap(50), w["rnn_backprop"], ("rnn_backprop.json",)),
        Part("rnn_forward", "benchmarks/rnn_forward_benchmark.py", [
            "--device", dev, "--methods", "sequential", "jacobi", "newton", "quasi_newton", "damped_newton",
            "--frontier-tols", "0", "1e-6", "--min-sample-s", "0", "--out", str(w["rnn_forward"]),
            *(["--cases", "gru_T200_H4", "gru_T200_H4_jax", *quick] if smoke else
              ["--cases", "gru_T10000_H8", "gru_T10000_H8_jax", "gru_T100000_H8_jax", "gru_T10000_H64",
               "gru_T100000_H64_jax", "--threads", "4", "--repeats", "3", "--max-jacobian-gib", "16"]),
        ], cap(55), w["rnn_forward"], ("*/*/metrics.json",)),
        Part("recurrence", "benchmarks/recurrence_benchmark.py", [
            "--device", dev, "--frameworks", "jax", "torch", "--out", str(w["recurrence"] / "recurrence.md"),
            *(["--T", "200", "--H", "4", "--methods", "jacobi", "quasi_newton", "--tols", "0",
               "--repeats", "1", "--max-call-s", "10"] if smoke else
              ["--T", "10000", "100000", "--H", "8", "64", "--tols", "1e-5", "0", "--repeats", "2",
               "--max-jacobian-gib", "16", "--max-damped-flops", "1e13", "--max-call-s", "5"]),
        ], cap(55), w["recurrence"], ("recurrence.json",)),
    ]
    pixel = w["pixelcnnpp"]
    size = (["--nr-resnet", "1", "--nr-filters", "4", "--nr-logistic-mix", "2", "--source", "embedded"]
            if smoke else ["--source", "folder", "--folder", str(args.mnist)])
    train = Part("pixelcnnpp_train", "benchmarks/pixelcnnpp_paper_benchmark.py", [
        "--stage", "train", "--device", dev, "--out", str(pixel), *size,
        *(["--train-minutes", "0.2", "--train-steps", "4", "--eval-every", "2",
           "--train-batch", "4", "--test-images", "8"] if smoke else
          ["--train-minutes", str(args.pixelcnnpp_train_minutes),
           "--train-steps", "20000", "--learning-rate", "0.001", "--eval-every", "500", "--test-images", "512"]),
    ], cap(95), pixel, ("train.json",))
    checkpoint = Path(args.pixelcnnpp_checkpoint).resolve() if args.pixelcnnpp_checkpoint else pixel / "model.msgpack"
    sample = Part("pixelcnnpp_sample", "benchmarks/pixelcnnpp_paper_benchmark.py", [
        "--stage", "sample", "--device", dev, "--out", str(pixel), "--checkpoint", str(checkpoint), *size,
        "--methods", *PIXEL_METHODS,
        *(["--batch", "1", *quick] if smoke else ["--batch", "16", "--repeats", "2"]),
    ], cap(100), pixel, ("records.json",))
    if args.pixelcnnpp_checkpoint:
        train.skip = f"checkpoint given: {args.pixelcnnpp_checkpoint}"
        sample.cap_s += 0 if smoke else train.cap_s
    parts += [train, sample]
    if args.parts:
        for p in parts:
            if p.name not in args.parts:
                p.skip = "not in --parts"
    return parts


# ---- running ----------------------------------------------------------------------------------

def run_part(part: Part, env: dict, log_path: Path, cap_s: float) -> dict:
    """Run one part as a subprocess (its own process group) for at most ``cap_s`` seconds."""
    part.folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(part.command(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=cap_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = proc.returncode
    return {"status": status, "exit_status": rc, "seconds": round(time.perf_counter() - start, 2),
            "cap_s": cap_s}


def collect(part: Part) -> dict:
    """The JSON the part wrote (whatever it got to), by path relative to its folder."""
    records = {}
    for pattern in part.collect:
        for path in sorted(part.folder.glob(pattern)):
            rel = str(path.relative_to(part.folder))
            if path.stat().st_size > RECORD_FILE_BYTES:
                records[rel] = {"left_out": f"{path.stat().st_size} bytes > {RECORD_FILE_BYTES}"}
                continue
            try:
                records[rel] = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                records[rel] = {"unreadable": str(e)}
    return records


def tail(path: Path, nbytes: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - nbytes))
        return f.read().decode("utf-8", "replace")


def device_name(env: dict) -> dict:
    """torch.cuda.get_device_name, or "cpu", from a short subprocess (this process stays light)."""
    probe = ("import json, torch; c = torch.cuda.is_available(); "
             "print(json.dumps({'device': torch.cuda.get_device_name() if c else 'cpu', "
             "'cuda': c, 'torch': torch.__version__}))")
    try:
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return {"device": "unknown", "cuda": False, "error": str(e)}


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ---- the table (src/ffsolve/workflow/gpu_records.py, loaded by path: this process imports no ffsolve) ----

def _load_records_module():
    spec = importlib.util.spec_from_file_location("ffsolve_gpu_records", LIBRARY / "workflow" / "gpu_records.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_records = _load_records_module()
rows_of, part_table, markdown = _records.rows_of, _records.part_table, _records.markdown


# ---- main -------------------------------------------------------------------------------------

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", required=True, type=Path, help="the output folder (at most 4 files)")
    p.add_argument("--mnist", type=Path, help="full mode: the folder containing MNIST/raw")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, embedded MNIST test split")
    p.add_argument("--pixelcnnpp-checkpoint", help="sample this checkpoint instead of training one")
    p.add_argument("--pixelcnnpp-train-minutes", type=float, default=1.25,
                   help="full mode: PixelCNN++ training budget (wall clock, compilation included)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda, or cpu with --smoke")
    p.add_argument("--budget-s", type=float, default=465.0,
                   help="all parts together; a part's cap is cut to what is left")
    p.add_argument("--smoke-cap-s", type=float, default=180.0, help="--smoke: every part's cap")
    p.add_argument("--parts", nargs="+", help="run only these parts (the others are recorded skipped)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    args.out = args.out.resolve()
    args.mnist = args.mnist.resolve() if args.mnist else None
    if not args.smoke and not args.mnist:
        print("gpu_benchmark: full mode needs --mnist <folder containing MNIST/raw> (or --smoke)",
              file=sys.stderr)
        return 2
    if args.mnist and not (args.mnist / "MNIST" / "raw").is_dir():
        print(f"gpu_benchmark: no MNIST at {args.mnist / 'MNIST' / 'raw'}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ffsolve-gpu-") as tmp:
        work = Path(tmp)
        parts = plan(args, work)
        missing = missing_packages(sorted({p.script for p in parts}))
        if missing:
            print("gpu_benchmark: this Python cannot import " + ", ".join(missing) + ".\n"
                  "Build the wheel set with\n    " + WHEEL_COMMAND + "\nand run scripts/gpu_benchmark.sh, "
                  "which installs .whl/ into /tmp/ffsolve-site and puts it on PYTHONPATH.", file=sys.stderr)
            return 3
        env = dict(os.environ, FFSOLVE_PROGRESS="0", XLA_PYTHON_CLIENT_PREALLOCATE="false",
                   PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src")] + [p for p in env.get("PYTHONPATH", "").split(
            os.pathsep) if p])
        probe = device_name(env)
        if not args.smoke and (args.device or "cuda") == "cuda" and not probe.get("cuda"):
            print(f"gpu_benchmark: PyTorch sees no CUDA GPU ({probe}); use --smoke or --device cpu",
                  file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"device": probe.get("device"), "torch": probe.get("torch"), "smoke": args.smoke,
                  "python": sys.version.split()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  "jax": _version("jax"), "argv": sys.argv[1:], "work_dir": str(work),
                  "budget_s": args.budget_s, "parts": {}}
        logs = []
        for part in parts:
            entry = {"command": [Path(part.command()[0]).name] + part.command()[1:], "cap_s": part.cap_s}
            left = args.budget_s - (time.perf_counter() - started) if not args.smoke else part.cap_s
            if part.name == "pixelcnnpp_sample" and not part.skip:
                ckpt = Path(part.args[part.args.index("--checkpoint") + 1])
                if not ckpt.is_file():
                    trained = result["parts"]["pixelcnnpp_train"]["status"]
                    part.skip = f"no checkpoint at {ckpt} (pixelcnnpp_train: {trained})"
            if not part.skip and left < 10:
                part.skip = f"budget spent ({left:.0f} s left of --budget-s {args.budget_s:.0f})"
            if part.skip:
                entry.update(status="skipped", reason=part.skip)
                result["parts"][part.name] = entry
                print(f"== {part.name}: skipped ({part.skip})", file=sys.stderr, flush=True)
                continue
            cap_s = round(min(part.cap_s, left), 1)
            print(f"== {part.name} (cap {cap_s:.0f} s): {' '.join(entry['command'])}", file=sys.stderr, flush=True)
            log_path = work / f"{part.name}.log"
            entry.update(run_part(part, env, log_path, cap_s))
            entry["log_tail"] = tail(log_path, 4000).splitlines()[-15:]
            entry["records"] = collect(part)
            result["parts"][part.name] = entry
            logs.append((part.name, entry, log_path))
            print(f"   {part.name}: {entry['status']} (exit {entry['exit_status']}) in {entry['seconds']:.0f} s",
                  file=sys.stderr, flush=True)
        checkpoint = work / "pixelcnnpp" / "model.msgpack"
        if not args.smoke and checkpoint.is_file() and checkpoint.stat().st_size < MAX_FILE_BYTES:
            shutil.copyfile(checkpoint, args.out / "pixelcnnpp_model.msgpack")
            result["pixelcnnpp_checkpoint"] = "pixelcnnpp_model.msgpack"
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["ok"] = all(p["status"] in ("ok", "skipped") for p in result["parts"].values())
        with (args.out / "gpu_benchmark.log").open("w") as log:
            for name, entry, path in logs:
                text = tail(path, LOG_TAIL_BYTES)
                log.write(f"===== {name}: {entry['status']} (exit {entry['exit_status']}, {entry['seconds']} s)\n"
                          f"$ {' '.join(entry['command'])}\n{text}\n")
        (args.out / "gpu_benchmark.json").write_text(json.dumps(result, indent=1, default=str))
        (args.out / "gpu_benchmark.md").write_text(markdown(result))
    files = sorted(p for p in args.out.iterdir())
    too_big = [f.name for f in files if f.stat().st_size >= MAX_FILE_BYTES]
    print(f"gpu_benchmark: {len(files)} files in {args.out} ({result['seconds']:.0f} s): "
          + ", ".join(f.name for f in files), file=sys.stderr)
    if too_big or len(files) > MAX_OUT_FILES:
        print(f"gpu_benchmark: WARNING {args.out} holds {len(files)} files, too big: {too_big}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
