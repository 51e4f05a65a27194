"""The health page's facts (store, Prefect API) and its markdown: what an operator checks first."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from tasks.clock import shown, shown_with_age
from tasks.store import schema


def _aware(moment):
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # SQLite: naive UTC


# ------------------------------------------------------------------------- the store


def backups(engine: sa.Engine) -> dict:
    """The newest good backup and the newest verified restore, with when they happened."""
    backup_catalog = schema.backup_catalog
    with engine.connect() as conn:
        newest = conn.execute(
            sa.select(backup_catalog.c.kind, backup_catalog.c.target, backup_catalog.c.finished_at)
            .where(backup_catalog.c.status == "ok")
            .order_by(backup_catalog.c.finished_at.desc())
            .limit(1)
        ).first()
        verified = conn.execute(
            sa.select(backup_catalog.c.target, sa.func.max(backup_catalog.c.verified_at))
            .where(backup_catalog.c.kind == "verify", backup_catalog.c.status == "verified")
            .group_by(backup_catalog.c.target)
        ).all()
    return {"newest": newest, "verified": sorted(verified, key=lambda r: _aware(r[1]))[-1:]}


def promoted_models(engine: sa.Engine) -> list[dict]:
    versions = schema.model_versions
    with engine.connect() as conn:
        rows = conn.execute(sa.select(versions).where(versions.c.promoted)).mappings().all()
    return [dict(r) for r in rows]


def open_quality_flags(engine: sa.Engine, limit: int = 20) -> list[dict] | None:
    """Rows of quality_flags (written by tasks/store/ledger.py), or None where there are none."""
    if not sa.inspect(engine).has_table("quality_flags"):
        return None
    table = sa.Table("quality_flags", sa.MetaData(), autoload_with=engine)
    query = sa.select(table).limit(limit)
    if "resolved_at" in table.c:
        query = query.where(table.c.resolved_at.is_(None))
    if "flagged_at" in table.c:  # the newest first
        query = query.order_by(table.c.flagged_at.desc())
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings().all()]


# ------------------------------------------------------------------------- Prefect


def deployment_runs(client, now: dt.datetime, days: int = 30) -> tuple[list[dict], dict]:
    """Each deployment's last Completed run and its age; final states over the last days."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    rows = []
    for deployment in sorted(client.read_deployments(), key=lambda d: d.name):
        (last,) = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
            sort=FlowRunSort.END_TIME_DESC,
            limit=1,
        ) or [None]
        end = last.end_time if last else None
        rows.append({"deployment": deployment.name, "last_completed": end})
    since = FlowRunFilterStartTime(after_=now - dt.timedelta(days=days))

    def count(*types) -> int:
        return client.count_flow_runs(
            flow_run_filter=FlowRunFilter(
                start_time=since,
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types))),
            )
        )

    ok = count(StateType.COMPLETED)
    finished = ok + count(StateType.FAILED, StateType.CRASHED)
    return rows, {"runs": finished, "completed": ok, "days": days}


# ------------------------------------------------------------------------- markdown


def render(facts: dict, now: dt.datetime) -> str:
    """The page: freshness, runs, success rate, backups, model, quality flags (pure)."""
    lines = [f"# investflow health ({shown(now)})", "", "## Data", ""]
    lines += ["| dataset | newest stored | newest expected | freshness |", "|---|---|---|---|"]
    for row in facts["markets"] + facts["macro"]:
        verdict = f"**{row.verdict}**" if row.fresh is False else row.verdict
        lines.append(
            f"| {row.dataset} | {row.newest or 'none'} | {row.expected or '-'} | {verdict} |"
        )
    success = facts["success"]
    rate = f"{100 * success['completed'] / success['runs']:.1f}%" if success["runs"] else "n/a"
    lines += ["", "## Runs", "",
              f"Job success over the last {success['days']} days: **{rate}** "
              f"({success['completed']} of {success['runs']} finished runs; target > 99%).", "",
              "| deployment | last completed run |", "|---|---|"]  # fmt: skip
    for row in facts["deployments"]:
        lines.append(f"| {row['deployment']} | {shown_with_age(row['last_completed'], now)} |")
    newest, verified = facts["backups"]["newest"], facts["backups"]["verified"]
    lines += ["", "## Backups", ""]
    lines.append(
        f"- newest backup: {newest[0]} {newest[1]}, {shown_with_age(newest[2], now)}"
        if newest
        else "- newest backup: none"
    )
    lines.append(
        f"- newest verified restore: {verified[0][0]}, {shown_with_age(verified[0][1], now)}"
        if verified
        else "- newest verified restore: none (a backup never restored is not trusted)"
    )
    lines += ["", "## Model", ""]
    for model in facts["models"] or [{}]:
        if not model:
            lines.append("- no promoted model yet (predict-returns ends 'no model yet')")
            continue
        metrics = model.get("metrics") or {}
        ours = metrics.get("model") or {}
        said = ", ".join(f"{k} {ours[k]:.4g}" for k in ("mse", "mae", "hit_rate") if k in ours)
        baselines = [
            f"{name} mse {metrics[name]['mse']:.4g}"
            for name in ("zero_return", "yesterday_return")
            if name in metrics
        ]
        said += f"; baselines: {', '.join(baselines)}" if baselines else ""
        lines.append(f"- {model['market']}: {model['version']} ({said or 'no metrics'})")
    flags = facts["flags"]
    lines += ["", "## Open quality flags", ""]
    if flags is None:
        lines.append("none recorded")
    elif not flags:
        lines.append("none open")
    else:
        lines += [f"- {', '.join(f'{k}={v}' for k, v in flag.items())}" for flag in flags]
    return "\n".join(lines) + "\n"
