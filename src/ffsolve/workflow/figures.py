"""The workflow's cross-experiment figure rules: ``speedups`` (``figures/speedups.md`` and its
small multiples) and ``frontier``, both from ``results/summary.csv``. The figures themselves are
the kit's (:mod:`ffsolve.kit.plots`)."""

from __future__ import annotations

import logging

from ffsolve.kit.frontier import frontier_markdown, frontier_panels
from ffsolve.kit.io import write_text
from ffsolve.kit.plots import frontier_figure, save, speedups_figure
from ffsolve.kit.record import read_summary
from ffsolve.kit.tables import headline_rows, load_paper, side_by_side, speedups_markdown


def write_speedups(summary_csv: str, paper_yaml: str, markdown_out: str, *figure_out: str) -> list[dict]:
    """The ``speedups`` rule: ``figures/speedups.md`` and its figure from ``results/summary.csv``."""
    ours, paper = read_summary(summary_csv), load_paper(paper_yaml)
    rows = side_by_side(ours, paper.runs)
    write_text(markdown_out, speedups_markdown(rows, headline_rows(ours, paper.headlines)))
    save(speedups_figure(rows), *figure_out)
    return rows


def write_frontier(summary_csv: str, *figure_out: str) -> list:
    """The ``frontier`` rule: the figure(s) from ``results/summary.csv``."""
    panels = frontier_panels(read_summary(summary_csv))
    logging.getLogger(__name__).info("frontier:\n%s", frontier_markdown(panels))
    save(frontier_figure(panels), *figure_out)
    return panels
