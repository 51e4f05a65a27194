"""Universes: read each index and market listing and keep who was a member when."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks import clock
from tasks.logs import run_id
from tasks.params import PastDate, Seconds
from tasks.settings import get_settings
from tasks.store.engine import engine_from_settings
from tasks.universes import history
from tasks.universes.membership import Change, record_members
from tasks.universes.route import routed
from tasks.universes.sources import (
    LISTING_HOSTS,
    ListingGarbage,
    Member,
    SourceError,
    check_members,
    universes,
)

US_UNIVERSES = ["sp500", "nasdaq", "nyse"]
KR_UNIVERSES = ["kospi200", "kosdaq150", "kospi", "kosdaq"]


class UniverseSourcesFailed(RuntimeError):
    """One or more listing sources failed; their stored membership was left as it was."""


# A failed read is retried twice (the library gives no status to tell an outage from a bad
# page, so every failure to read is retried); a read listing that is not believable is not.
@task(
    name="read-listing",
    task_run_name="read-{name}",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=lambda t, r, state: (
        not isinstance(state.result(raise_on_failure=False), ListingGarbage)
    ),
    timeout_seconds=300,
)
def read_listing(name: str, day: dt.date) -> tuple[list[Member], list[str]]:
    """One universe's members today, checked, as Yahoo symbols."""
    settings = get_settings()
    universe = universes(settings.http_timeout_s)[name]
    ca = str(settings.listings_ca_bundle) if settings.listings_ca_bundle else None
    with routed(LISTING_HOSTS, settings.listings_base_url, ca):
        try:
            raw = universe.read(day)
        except Exception as exc:  # noqa: BLE001 - whatever the library raised, name the source
            raise SourceError(f"{universe.source} ({name}): {type(exc).__name__}: {exc}") from exc
    return check_members(universe, raw)


@flow(name="universes", timeout_seconds=1200)
def refresh_universes(
    names: list[str] | None = None,
    as_of: PastDate | None = None,
    retry_delay_s: Seconds = 10.0,
    history_from: PastDate | None = None,
) -> dict:
    """Read each universe's listing and record joiners, leavers and ticker changes; with
    history_from, first backfill the KRX indexes' membership from that day."""
    known = universes()
    names = chosen(names or US_UNIVERSES + KR_UNIVERSES, known)
    day = as_of or clock.now().date()
    engine = engine_from_settings()
    plans = history_plans(engine, [known[n] for n in names], history_from, day)
    read = read_listing.with_options(retry_delay_seconds=[retry_delay_s, 6 * retry_delay_s])
    run = Refreshed()
    for name in names:
        refresh_one(engine, read, known[name], day, plans.get(name), run)
    report(day, run.sizes, run.changes, run.failed, run.backfilled)
    if run.failed:
        raise UniverseSourcesFailed(
            "stored membership left unchanged for: "
            + "; ".join(f"{n} ({why})" for n, why in run.failed.items())
        )
    return {
        "day": str(day),
        "members": run.sizes,
        "changes": [asdict(c) for c in run.changes],
        "history": run.backfilled,
    }


@dataclass
class Refreshed:
    """What the run did to each universe: members, changes, failures, history spells."""

    sizes: dict[str, int] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    backfilled: dict[str, int] = field(default_factory=dict)


def chosen(names: list[str], known: dict) -> list[str]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown universes {unknown}: known are {sorted(known)}")
    return names


def refresh_one(engine, read, universe, day: dt.date, plan, run: Refreshed) -> None:
    """One universe's listing (and past listings, when planned) read and stored whole, or a
    failure recorded and nothing stored: the other universes go on."""
    name = universe.name
    days, until = plan or ([], day)
    try:
        members, refused = read(name, day)
        past = read_past(read, name, days)
    except Exception as exc:  # noqa: BLE001 - reported by the flow; the other universes go on
        run.failed[name] = str(exc)
        get_run_logger().error("%s: %s", name, exc)
        return
    if refused:
        get_run_logger().warning("%s: %d rows refused, e.g. %s", name, len(refused), refused[:5])
    with engine.begin() as conn:  # one universe lands whole or not at all
        run.changes += record_members(conn, name, members, day, universe.source, run_id())
        if plan is not None:
            spells = history.history_spells(past, until)
            run.backfilled[name] = history.record_history(
                conn, name, spells, until, universe.source, run_id()
            )
    run.sizes[name] = len(members)


def history_plans(engine, chosen, start, day) -> dict[str, tuple[list[dt.date], dt.date]]:
    """Per universe to backfill: the past days to read and the day its stored history begins
    (today's, when nothing is stored yet). Checked before any request."""
    if start is None:
        return {}
    plans = {}
    with engine.connect() as conn:
        for universe in chosen:
            if universe.history_since is None:
                get_run_logger().warning(
                    "%s: %s gives today's listing only, no history", universe.name, universe.source
                )
                continue
            until = history.first_stored_day(conn, universe.name) or day
            plans[universe.name] = (history.plan(universe, start, until), until)
    return plans


def read_past(read, name: str, days: list[dt.date]) -> list[tuple[dt.date, list[Member]]]:
    """The listing as of each past day, one at a time; the first failure names its day."""
    past = []
    for i, day in enumerate(days):
        if i:
            clock.sleep(history.PAUSE_S)
        try:
            members, _ = read(name, day)
        except Exception as exc:
            raise SourceError(f"listing of {day}: {exc}") from exc
        past.append((day, members))
    return past


def report(day, sizes, changes, failed, backfilled) -> None:
    """The run's artifacts: the changes as a table, and a summary per universe."""
    if changes:
        create_table_artifact(
            [asdict(c) | {"day": str(c.day)} for c in changes[:2000]],
            key="universes-changes",
            description=f"{len(changes)} membership changes on {day}",
        )
    lines = [f"## universes on {day}", ""]
    for name, size in sizes.items():
        mine = [c for c in changes if c.universe == name]
        kinds = {k: sum(c.change == k for c in mine) for k in ("joined", "left", "ticker change")}
        lines.append(
            f"- {name}: {size} members; " + ", ".join(f"{k} {v}" for k, v in kinds.items())
        )
    for name, spells in backfilled.items():
        lines.append(f"- {name}: history backfilled, {spells} spells before the stored ones")
    for name, why in failed.items():
        lines.append(f"- {name}: FAILED, membership unchanged: {why}")
    create_markdown_artifact("\n".join(lines) + "\n", key="universes-summary")
