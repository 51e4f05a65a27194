"""What a model run shows: validation beside the baselines, and a predicted-vs-realised plot."""

from __future__ import annotations

import base64
import io

import numpy as np
from prefect.artifacts import create_link_artifact, create_markdown_artifact


def plot_png(predicted: np.ndarray, realised: np.ndarray, title: str) -> bytes:
    """A scatter of predicted against realised next-session log returns, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=80)
    ax = fig.subplots()
    ax.scatter(realised, predicted, s=4, alpha=0.4)
    lim = float(np.nanmax(np.abs(realised))) if len(realised) else 1.0
    ax.plot([-lim, lim], [-lim, lim], color="grey", linewidth=0.8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("realised log return")
    ax.set_ylabel("predicted log return")
    ax.set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def training_markdown(result: dict, png: bytes | None = None) -> str:
    """The train-model artifact: version, ranges, and the model against both baselines."""
    m = result["metrics"]
    rows = [
        ("model", m["model"]),
        ("baseline: zero return", m["zero_return"]),
        ("baseline: yesterday's return", m["yesterday_return"]),
    ]
    lines = [
        f"# Model {result['version']} ({result['market']})",
        "",
        f"- device: **{result['device']}**",
        f"- training targets: {result['train_range'][0]} .. {result['train_range'][1]}",
        f"- validation targets: {result['val_range'][0]} .. {result['val_range'][1]} "
        f"({m['samples']} samples)",
        f"- promoted: **{'yes' if result['promoted'] else 'no'}** — {result['decision']}",
        f"- checkpoint: `{result['uri']}` (sha256 `{result['sha256'][:16]}…`)",
        "",
        "| predictor | MSE | MAE | hit rate |",
        "|---|---:|---:|---:|",
        *[
            f"| {name} | {s['mse']:.3e} | {s['mae']:.3e} | {_rate(s['hit_rate'])} |"
            for name, s in rows
        ],
    ]
    if png:
        encoded = base64.b64encode(png).decode()
        lines += ["", f"![predicted vs realised](data:image/png;base64,{encoded})"]
    return "\n".join(lines)


def prediction_markdown(result: dict) -> str:
    """The predict-returns artifact: which model, where it ran, what was written and skipped."""
    lines = [
        f"# Predictions {result['market']} as of {result['as_of']}",
        "",
        f"- model: **{result['model_version']}**",
        f"- device: **{result['device']}**",
        f"- symbols predicted: {result['predicted']} "
        f"(inserted {result['inserted']}, updated {result['updated']}, "
        f"unchanged {result['unchanged']})",
        f"- symbols skipped: {len(result['skipped'])}",
    ]
    if result["skipped"]:
        lines += ["", "| skipped symbol | why |", "|---|---|"]
        lines += [f"| {s} | {why} |" for s, why in list(result["skipped"].items())[:200]]
        if len(result["skipped"]) > 200:
            lines.append(f"| … | {len(result['skipped']) - 200} more |")
    return "\n".join(lines)


def promotion_decision(promoted: bool, why: str, kept: str | None = None) -> str:
    """Why a version was promoted, or which one stays promoted and why."""
    if promoted:
        return f"beats both naive baselines on validation: {why}"
    return (
        f"not promoted, {kept or 'no version'} stays promoted: it does not beat both naive "
        f"baselines by more than noise: {why}"
    )


def publish_training(result: dict, png: bytes) -> None:
    """The train-model artifacts: the validation report and a link to the plot."""
    market = result["market"].lower()
    create_markdown_artifact(
        training_markdown(result, png),
        key=f"train-model-{market}",
        description=f"validation of {result['version']}",
    )
    create_link_artifact(
        result["plot_uri"],
        link_text=f"plot of {result['version']}",
        key=f"train-model-plot-{market}",
    )


def publish_prediction(result: dict) -> None:
    """The predict-returns artifact."""
    create_markdown_artifact(
        prediction_markdown(result),
        key=f"predict-returns-{result['market'].lower()}",
        description=f"predictions as of {result['as_of']} on {result['device']}",
    )
