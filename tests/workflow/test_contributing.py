"""CONTRIBUTING.md's list of the files a new experiment touches outside its own folder and its
tests stays true.

The list (between the ``new-experiment-files`` markers) is compared with the repository: every
tracked file that names all the experiments of ``ffsolve.experiments.EXPERIMENTS`` (a list a new
one must join) and every tracked file named after an experiment must be on it, every entry on it
must exist for every experiment, and it holds six entries at most. Left out of the comparison:
the experiments' own folders, ``tests/`` (their tests), ``benchmarks/`` (optional, one script
per question), ``docs/`` and
the documents that describe the experiments rather than list them for the workflow (README.md,
CONTRIBUTING.md, and config/README.md, which ``ffsolve.workflow.config_docs`` generates). A file
of the library outside the experiments (``src/ffsolve/speculative.py``) may share a name with one.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import pytest

from ffsolve.experiments import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[2]
NOT_COMPARED = ("src/ffsolve/experiments/", "tests/", "benchmarks/", "docs/")
DOCUMENTS = ("README.md", "CONTRIBUTING.md", "config/README.md")


def listed() -> list[str]:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    block = re.search(r"<!-- new-experiment-files:start -->(.*?)<!-- new-experiment-files:end -->", text, re.S)
    assert block, "CONTRIBUTING.md lost its new-experiment-files markers"
    return re.findall(r"^- `([^`]+)`", block.group(1), re.M)


def _pattern(entry: str, experiment: str) -> str:
    return entry.replace("<exp>", experiment).replace("<step>", "*")


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = [f for f in out.stdout.split("\n") if f and (ROOT / f).is_file()]
    return [f for f in files if not f.startswith(NOT_COMPARED) and f not in DOCUMENTS]


def _on_the_list(path: str, entries: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, _pattern(entry, exp)) for entry in entries for exp in EXPERIMENTS)


def test_the_list_is_read():
    entries = listed()
    assert "src/ffsolve/experiments/__init__.py" in entries and len(entries) == len(set(entries))


MOST_ENTRIES = 6


def test_a_new_experiment_touches_few_files_outside_its_folder():
    # What can follow EXPERIMENTS does (the Snakefile's includes, scripts/experiment_job.py, the
    # schemas in the experiments' folders); a seventh entry needs a reason to be more than a loop.
    entries = listed()
    assert len(entries) <= MOST_ENTRIES, (
        f"CONTRIBUTING.md lists {len(entries)} files a new experiment touches (at most {MOST_ENTRIES}): {entries}")


def test_every_file_that_lists_all_experiments_is_on_the_list(tracked):
    entries, missing = listed(), []
    for path in tracked:
        try:
            text = (ROOT / path).read_text()
        except UnicodeDecodeError:
            continue
        if all(re.search(rf"\b{name}\b", text) for name in EXPERIMENTS) and not _on_the_list(path, entries):
            missing.append(path)
    assert missing == [], f"files that name every experiment, missing from CONTRIBUTING.md's list: {missing}"


def test_every_file_named_after_an_experiment_is_on_the_list(tracked):
    entries = listed()
    named = [p for p in tracked if not p.startswith("src/") for name in EXPERIMENTS  # src/: the library's
             if re.search(rf"(^|[/_.]){name}([/_.]|$)", Path(p).name) or f"/{name}/" in f"/{p}"]
    assert [p for p in named if not _on_the_list(p, entries)] == []


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_entry_exists_for_every_experiment(experiment, tracked):
    for entry in listed():
        pattern = _pattern(entry, experiment)
        assert any(fnmatch.fnmatch(p, pattern) for p in tracked) or (ROOT / pattern).exists(), (
            f"CONTRIBUTING.md lists {entry}, which {experiment} does not have")
