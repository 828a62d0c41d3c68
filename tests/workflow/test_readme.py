"""The README stays true: its example runs, its commands are the ones CI runs."""

import re
import subprocess
import sys


def readme(repo_root):
    return (repo_root / "README.md").read_text()


def test_readme_example_runs(repo_root, tmp_path):
    text = readme(repo_root)
    example = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S)
    assert example, "README lost its tested example"
    script = tmp_path / "example.py"
    script.write_text(example[1])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"sequential 64 calls, jacobi \d+, gs_jacobi \d+", proc.stdout)


def test_ci_runs_the_readme_test_command(repo_root):
    commands = re.search(r"```bash\n(.*?)```", readme(repo_root), re.S)[1]
    test_command = [line for line in commands.splitlines() if "pytest" in line]
    assert len(test_command) == 1
    assert test_command[0].strip() in (repo_root / ".ci" / "run").read_text()
    main_command = [line for line in commands.splitlines() if "snakemake" in line]
    assert main_command and "figures" in main_command[0]


# The README is a guide: measured numbers live on the generated results page (docs/results.md,
# results/results.md), stamped with the commit, date, machine and config they came from. The
# guide pages it links to carry none either.
GUIDE = ("README.md", "docs/auto.md", "docs/recurrences.md", "docs/measuring.md")
README_MAX_LINES = 250

# Each pattern with phrases it must catch (measured numbers) and phrases it must let through
# (settings and names), checked below so that the patterns themselves cannot rot into no-ops.
MEASURED = {
    # a speedup factor: "1.75×", "23.2× over", "1.25 × the best"; not a shape ("2×512", "28 × 28")
    "speedup factor": (
        re.compile(r"\d\s*×(?!\s*\d)|\d(?:\.\d+)?x\b(?!\s*\d)|\d(?:\.\d+)?\s*x\s+(?:faster|slower)\b"),
        ["Jacobi 1.75× faster", "23.2× over sequential", "at 0.57×.", "1.25 × the best time",
         "ran 1.3x faster", "3 x faster"],
        ["T = 784", "a 2x512 MADE", "28 × 28 images", "2 cores", "Python 3.11", "batch 16",
         "tol 1e-4", "x0 = torch.zeros(T, batch)", "H = 8", "2 images"],
    ),
    # a time, a memory peak or a share: "74.8 ms", "36 s against", "6 min 48 s", "1.55 GB", "51 %"
    "time, memory or share": (
        re.compile(r"\d\s?(?:ms|µs|us|ns|s|sec|secs|seconds|min|mins|minutes|h|hours)\b"
                   r"|\d\s?(?:GB|GiB|MB|MiB)\b|\d\s?%"),
        ["loop 74.8 ms", "took 36 s against", "6 min 48 s", "a 2 s call", "peak 1.55 GB",
         "(51 %)", "75 µs a step", "in 3 minutes"],
        ["T = 784", "16 sequences", "2 cores", "Python 3.11", "batch 16", "tol 1e-4",
         "200 SGD steps", "runtime=60 mem_mb=16000", "100 test images", "1 resnet block"],
    ),
    # a measured step count: "34/784 steps"
    "step count": (
        re.compile(r"\d\s?/\s?\d+\s+(?:steps|iterations|layers)\b"),
        ["Jacobi 34/784 steps", "18/18 layers"],
        ["T = 784 steps at most", "arXiv 2002.03629"],
    ),
    # a commit hash, 7 to 40 hex digits with at least one digit and one letter: "4f5f799"
    "commit hash": (
        re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"),
        ["at commit 4f5f799", "(commit 701a006: one job", "d74bb3c9e0f1a2b3c4d5e6f708192a3b4c5d6e7f"],
        ["T = 1000", "seed 1234", "arXiv 2002.03629", "a decade", "effaced", "cuda12", "1e-4"],
    ),
}


def test_readme_is_at_most_250_lines(repo_root):
    lines = readme(repo_root).splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail into "
        f"docs/*.md and link it")


def test_measured_number_patterns_catch_and_let_through():
    for name, (pattern, measured, settings) in MEASURED.items():
        for phrase in measured:
            assert pattern.search(phrase), f"{name} pattern misses the measured phrase {phrase!r}"
        for phrase in settings:
            assert not pattern.search(phrase), f"{name} pattern flags the setting {phrase!r}"


def test_guide_carries_no_measured_number(repo_root):
    found = []
    for page in GUIDE:
        for number, line in enumerate((repo_root / page).read_text().splitlines(), 1):
            for name, (pattern, _, _) in MEASURED.items():
                hit = pattern.search(line)
                if hit:
                    found.append(f"{page}:{number}: {name} {hit[0]!r}: {line.strip()}")
    assert not found, ("measured numbers belong on the generated results page (docs/results.md), "
                       "not in the guide:\n" + "\n".join(found))
