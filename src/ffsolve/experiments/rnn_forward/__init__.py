"""Long-sequence evaluation of recurrent networks (issue 12): a GRU trained on MNIST pixels and
random GRU / softplus RNNs, evaluated by every recurrence method of ``ffsolve.solve_recurrence``
(model.py, system.py, experiment.py, plots.py). The case names and run layout live torch-free in
cases.py, so workflow/rules/common.smk expands the same runs the measure job writes.
"""

from ffsolve.experiments.rnn_forward.cases import (
    CASE_PATTERN,
    configured_runs,
    parse_case,
    run_names,
)

__all__ = ["CASE_PATTERN", "configured_runs", "parse_case", "run_names"]
