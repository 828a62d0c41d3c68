"""The ``data_prepare`` job: load from the configured source, save as ``.npz``."""

from __future__ import annotations

import logging
from pathlib import Path

from ffsolve.data.core import save_prepared
from ffsolve.data.sources import load_dataset
from ffsolve.kit import Job

log = logging.getLogger(__name__)


def prepare(job: Job) -> None:
    name = job.wildcards.dataset
    settings = job.params.settings
    # The shipped files are the rule's inputs: read those, wherever the workflow was copied.
    embedded = list(job.input.embedded)
    dataset = load_dataset(
        name,
        settings["source"],
        settings.get("folder"),
        download_root=job.params.download_root,
        embedded_dir=Path(embedded[0]).parent if embedded else None,
    )
    log.info(
        "%s from %s: train %s, test %s", name, dataset.source,
        dataset.train_images.shape, dataset.test_images.shape,
    )
    save_prepared(dataset, job.output.dataset)
