"""One module per experiment; each exposes functions that take a :class:`ffsolve.jobs.Job`."""
