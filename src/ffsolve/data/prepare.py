"""The ``data_prepare`` job: load from the configured source, save as ``.npz``."""

from __future__ import annotations

import logging

from ffsolve.data.core import save_prepared
from ffsolve.data.sources import load_dataset
from ffsolve.jobs import Job

log = logging.getLogger(__name__)


def prepare(job: Job) -> None:
    name = job.wildcards.dataset
    settings = job.params.settings
    dataset = load_dataset(
        name, settings["source"], settings.get("folder"), download_root=job.params.download_root
    )
    log.info(
        "%s from %s: train %s, test %s", name, dataset.source,
        dataset.train_images.shape, dataset.test_images.shape,
    )
    save_prepared(dataset, job.output.dataset)
