"""The logger a task should use: the run's own inside a Prefect run, a plain one outside."""

from __future__ import annotations

import logging


def run_logger(fallback: str = "investflow") -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run; logging.getLogger(fallback) when called directly
    (benchmarks, the shell), where Prefect has no run to attach the lines to."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(fallback)
