"""Makes ``src/ffsolve`` importable in environments where the package is not installed.

The project's virtualenv installs ffsolve (``pip install -e .``); a conda environment created by
``snakemake --sdm conda`` holds only the third-party packages. Snakemake puts this folder on
``sys.path`` for every ``script:``, so importing this module first covers both.
"""

import sys
from pathlib import Path

try:
    import ffsolve  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
