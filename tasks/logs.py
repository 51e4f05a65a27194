"""Which run this is: the logger a task should use and the id rows are stamped with."""

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


def run_id() -> str | None:
    """The flow run's id (also inside its tasks and in a worker's flow-run process); None
    outside a run (benchmarks, the shell)."""
    from prefect.runtime import flow_run

    return str(flow_run.get_id() or "") or None
