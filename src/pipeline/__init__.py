"""The pipeline: one function per phase, the phases wired through the progress tracker,
the checks made before a run, and the command line generated from the option table.

    phases.py   one function per phase (data, estimation, standard errors, output)
    tracked.py  run_estimation_with_tracking() (where phases are wired) and run()
    checks.py   what is checked before any work (model, data file, folders)
    cli.py      argparse from src.config.OPTIONS; one-sentence errors, --version

``scripts/02_run_estimation.py`` and :mod:`src.api` both use it.
"""

from .tracked import run, run_estimation_with_tracking

__all__ = ["run", "run_estimation_with_tracking"]
