"""Executing the figure notebooks with papermill (one helper for every figure rule)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def execute_notebook(notebook: str, output_notebook: str, parameters: dict, cwd: str = ".") -> None:
    """Run ``notebook`` with ``parameters`` injected after its ``parameters`` cell.

    The kernel is the interpreter running this function (``python3`` from ipykernel), so a
    virtualenv or conda environment that started the job also runs the notebook.
    """
    import papermill

    Path(output_notebook).parent.mkdir(parents=True, exist_ok=True)
    log.info("executing %s -> %s with %s", notebook, output_notebook, parameters)
    papermill.execute_notebook(
        notebook,
        output_notebook,
        parameters=parameters,
        kernel_name="python3",
        cwd=cwd,
        progress_bar=False,
        log_output=True,
    )
