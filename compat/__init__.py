"""Compare package versions between Dask clients, schedulers and workers.

Light enough to install in a notebook (it needs only PyYAML; distributed and
dask-gateway are imported when a live check runs). The pieces:

* :mod:`compat.sources` reads static package sets: a conda-lock lockfile
  (``lock:PATH#notebook``), a built image (``image:REF``), a conda prefix
  (``prefix:PATH``) or the current environment (``env``);
* :mod:`compat.live` reads a running cluster: the client, the scheduler and
  every worker, by address or dask-gateway cluster name;
* :mod:`compat.rules` says which differences are errors, after distributed's
  own version check, and :mod:`compat.compare` finds and classifies them;
* :mod:`compat.report` renders a report as a table, Markdown or JSON;
* :mod:`compat.gate` refuses a notebook/worker image pair before publishing;
* :mod:`compat.plugin` is an optional scheduler guard for joining workers;
* :mod:`compat.clientcheck` is a client preload that makes a mismatch an error at
  ``Client(...)``, reading distributed's table with :mod:`compat.versiontable`;
* :mod:`compat.cli` is the command line, ``daskhub-compat``.
"""
