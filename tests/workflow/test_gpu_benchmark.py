"""scripts/gpu_benchmark.sh runs before a GPU is there: its smoke mode end to end on the CPU, and its
code's imports covered by what the GPU machine has plus the wheels carried to it."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

import prefetch

REPO = Path(__file__).resolve().parents[2]


def load_entry_point():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_benchmark"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gb = load_entry_point()
PARTS = ["made", "densenet", "rnn_backprop", "rnn_forward", "recurrence", "pixelcnnpp_train", "pixelcnnpp_sample"]


def full_plan(tmp_path, *extra):
    args = gb.parse(["--out", str(tmp_path / "out"), "--mnist", str(tmp_path), *extra])
    return args, gb.plan(args, tmp_path / "work")


@prefetch.job("gpu_smoke")
def _smoke_run(context: prefetch.Context):
    """scripts/gpu_benchmark.sh --smoke, a background job of tests/prefetch.py (started when the
    session starts). Run there at low priority, a part may wait on the foreground tests for a
    core: its cap (what stops a hung part) is raised from the smoke default of 180 s."""
    folder = context.tmp_path_factory.mktemp("gpu_smoke")
    out = folder / "gpu"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = prefetch.run([str(REPO / "scripts" / "gpu_benchmark.sh"), "--smoke", "--smoke-cap-s", "900",
                         "--out", str(out)], cwd=folder, env=env, timeout=3600, nice=context.nice)
    return proc, out


@pytest.fixture
def gpu_smoke():
    return prefetch.result("gpu_smoke")


@pytest.mark.slow
def test_smoke_mode_end_to_end(gpu_smoke):
    proc, out = gpu_smoke
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = sorted(out.iterdir())
    assert 3 <= len(files) <= gb.MAX_OUT_FILES, files
    assert all(f.is_file() and f.stat().st_size < 16 * 2**20 for f in files)
    result = json.loads((out / "gpu_benchmark.json").read_text())
    assert result["smoke"] and result["device"] == "cpu"
    assert list(result["parts"]) == PARTS
    for name, part in result["parts"].items():
        assert part["status"] == "ok", (name, part.get("log_tail"))
        assert part["command"][1].startswith("benchmarks/") and part["seconds"] > 0
        assert gb.rows_of(part["records"]) or name == "pixelcnnpp_train", name
    table = (out / "gpu_benchmark.md").read_text()
    assert "| part | status | exit | seconds | cap (s) |" in table
    for name in PARTS:
        assert f"| {name} | ok |" in table
    assert "× sequential_cache" in table and "1.00×" in table
    assert "===== pixelcnnpp_sample: ok" in (out / "gpu_benchmark.log").read_text()


def test_full_mode_fits_one_borrowing(tmp_path):
    """Eight minutes on the GPU machine: the parts' caps, the wrapper's install and the merge."""
    args, parts = full_plan(tmp_path)
    assert [p.name for p in parts] == PARTS
    assert sum(p.cap_s for p in parts) <= 450 and args.budget_s <= 470
    assert all((REPO / p.script).is_file() for p in parts)
    assert not any("--train" in p.args or "--solve" in p.args for p in parts), "snakemake is not there"
    assert all(p.args[p.args.index("--device") + 1] == "cuda" for p in parts)
    # a carried checkpoint skips the training and gives its time to sampling
    _, parts = full_plan(tmp_path, "--pixelcnnpp-checkpoint", str(tmp_path / "model.msgpack"))
    by_name = {p.name: p for p in parts}
    assert by_name["pixelcnnpp_train"].skip and sum(p.cap_s for p in parts if not p.skip) <= 450


def test_imports_are_covered_by_the_gpu_machine_and_the_wheels():
    scripts = sorted({p.script for p in full_plan(REPO / "results")[1]})
    imports = gb.third_party_imports(gb.scanned_files(scripts))
    assert {"torch", "jax", "jsonschema", "array_api_compat"} <= set(imports)  # the scan sees them
    uncovered = {m: files for m, files in imports.items() if m not in gb.COVERED and m not in gb.ALLOWED_UNCOVERED}
    assert not uncovered, (
        f"imported by the GPU benchmark's code but neither on the GPU machine nor in the wheel set: "
        f"{uncovered}; add it to WHEEL_PACKAGES (and scripts/gpu_wheels.sh) or GPU_MACHINE_PACKAGES "
        "in benchmarks/gpu_benchmark.py if the machine has it")
    for module, reason in gb.ALLOWED_UNCOVERED.items():
        top_level = [f for f, lazy in imports.get(module, []) if not lazy]
        assert not top_level, f"{module} ({reason}) is now imported at module level by {top_level}"
    assert gb.missing_packages(scripts) == []  # this venv has everything


def test_the_scan_catches_a_new_import(tmp_path, monkeypatch):
    monkeypatch.setattr(gb, "REPO", tmp_path)
    code = tmp_path / "x.py"
    code.write_text("import os\nimport numpy.linalg\nfrom some_new_package.sub import thing\n"
                    "def f():\n    import snakemake\n")
    imports = gb.third_party_imports([code])
    assert set(imports) == {"numpy", "some_new_package", "snakemake"}
    assert imports["snakemake"] == [("x.py", True)] and imports["numpy"] == [("x.py", False)]
    assert "some_new_package" not in gb.COVERED


def test_wheel_script_pins_the_wheel_set():
    text = (REPO / "scripts" / "gpu_wheels.sh").read_text()
    for dist in gb.WHEEL_PACKAGES:
        assert f"    {dist}==" in text, dist
    assert "--python-version 3.12" in text and "/.whl/" in text
