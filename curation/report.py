"""The curation report: one HTML page with counts, hours, drops per reason and plots.

``write_report(out_dir, manifest, rejects, stats)`` writes ``out_dir/report.html`` and
its PNG plots under ``out_dir/report/``. The page embeds each plot as a data URI, so it is
whole on its own: in MLflow's artifact preview, mailed, or copied without its folder. It
reads only the manifest rows, the rejects rows and the run's stats, so it works on any
finished output directory and on empty ones; a measurement that no clip has is simply not
plotted.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

# (manifest column, plot title, x label)
DISTRIBUTIONS = [
    ("duration_s", "Clip durations", "seconds"),
    ("sync_offset_ms", "A/V sync offsets (positive: audio lags)", "ms"),
    ("loudness_lufs", "Loudness", "LUFS"),
    ("tempo_bpm", "Tempo", "BPM"),
    ("motion_score", "Motion", "score"),
    ("speech_ratio", "Speech ratio", "fraction of the clip"),
]


def _histogram(values: list[float], title: str, xlabel: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.hist(values, bins=min(30, max(5, len(values))), color="#4c72b0")
    ax.set(xlabel=xlabel, ylabel="clips")
    ax.set_title(f"{title} (n={len(values)})", fontsize="medium")  # the longest title fits the width
    # Fixed margins that fit a title, an x label and clip counts: tight_layout measured
    # every text's extent and was 40% of the plot's cost, at the end of every run.
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.16, top=0.9)
    fig.savefig(path)
    plt.close(fig)


def _bar(counts: dict[str, int], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(counts) + 1.2), dpi=100)
    names = list(counts)
    ax.barh(names, [counts[n] for n in names], color="#c44e52")
    ax.invert_yaxis()
    ax.set(title="Drops per reason", xlabel="items")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _embedded(png: Path) -> str:
    """An ``<img>`` carrying the PNG itself (a relative src shows broken in MLflow's preview)."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(png.name)}">'


def _table(rows: list[tuple], header: tuple) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def sync_summary(manifest: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(action, method or reason, clips) for the kept clips: measured ones by action and
    method, unmeasured ones by why (no_face, no_speech, no_events, ambiguous)."""
    counts = Counter((r.get("sync_action") or "not run",
                      (r.get("sync_reason") if r.get("sync_offset_ms") is None else r.get("sync_method")) or "-")
                     for r in manifest)
    return [(action, detail, n) for (action, detail), n in sorted(counts.items())]


def sync_actions(manifest: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> list[tuple]:
    """(action, clips, median |offset| ms, largest |offset| ms): how many clips the sync
    stage kept, corrected (audio shifted by the offset), rejected as out of sync, or could
    not measure, and by how much it found them off."""
    offsets: dict[str, list[float]] = {}
    for r in manifest:
        offsets.setdefault(r.get("sync_action") or "not run", []).append(r.get("sync_offset_ms"))
    for r in rejects:
        if r.get("stage") == "sync":
            action = "rejected" if r["reason"] == "av_desync" else r["reason"]
            offsets.setdefault(action, []).append(r.get("sync_offset_ms"))
    rows = []
    for action, values in sorted(offsets.items()):
        measured = [abs(v) for v in values if v is not None]
        rows.append((action, len(values), f"{np.median(measured):.0f}" if measured else "-",
                     f"{max(measured):.0f}" if measured else "-"))
    return rows


def sync_reliability() -> list[tuple]:
    """The sync calibration's reliability on held-out speakers (curation.sync.RELIABILITY)."""
    from curation.sync import RELIABILITY

    return [(method, band, n, within, wrong) for method, rows in RELIABILITY.items() for band, n, within, wrong in rows]


def write_report(out_dir: str | Path, manifest: list[dict[str, Any]], rejects: list[dict[str, Any]],
                 stats: dict[str, Any]) -> Path:
    out_dir = Path(out_dir)
    plots = out_dir / "report"
    plots.mkdir(parents=True, exist_ok=True)
    for old in plots.glob("*.png"):
        old.unlink()
    images = []
    reasons = Counter(r["reason"] for r in rejects)
    if reasons:
        _bar(dict(reasons.most_common()), plots / "reject_reasons.png")
        images.append("reject_reasons.png")
    unmeasured = sum(1 for r in manifest if r.get("sync_offset_ms") is None)
    for column, title, xlabel in DISTRIBUTIONS:
        values = [float(r[column]) for r in manifest if r.get(column) is not None]
        if column == "sync_offset_ms":  # offsets exist for measured clips only; say how many are not
            title = f"{title}; {unmeasured} unmeasured"
        if values:
            _histogram(values, title, xlabel, plots / f"{column}.png")
            images.append(f"{column}.png")

    summary = [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in stats.items()
               if isinstance(v, int | float | str)]
    per_stage = [(name, s["items"], f"{s['seconds']:.2f}",
                  f"{s['items'] / s['seconds']:.1f}" if s["seconds"] else "-",
                  f"{s['footage_s'] / s['seconds']:.1f}" if s["seconds"] else "-")
                 for name, s in (stats.get("per_stage") or {}).items()]
    by_reason = [(reason, count, next(r["stage"] for r in rejects if r["reason"] == reason))
                 for reason, count in reasons.most_common()]
    sections = [
        "<h1>tandem curation report</h1>",
        f"<p>{html.escape(str(out_dir))}</p>",
        "<h2>Summary</h2>", _table(summary, ("", "value")),
        "<h2>Drops per reason</h2>", _table(by_reason, ("reason", "count", "stage")) if by_reason else "<p>none</p>",
        "<h2>A/V sync of kept clips</h2>",
        _table(sync_summary(manifest), ("action", "method (measured) or reason (unmeasured)", "clips"))
        if manifest else "<p>-</p>",
        "<h2>A/V sync actions, kept and rejected clips</h2>",
        _table(sync_actions(manifest, rejects), ("action", "clips", "median |offset| ms", "largest |offset| ms")),
        "<h3>Sync confidence against actual error (real footage, held-out speakers; "
        "benchmarks/sync_accuracy.py)</h3>",
        _table(sync_reliability(), ("method", "confidence", "estimates", "within 40 ms", "off by > 80 ms")),
        "<h2>Per-stage throughput (per worker)</h2>",
        _table(per_stage, ("stage", "items", "busy s", "items/s", "footage s/s")) if per_stage else "<p>-</p>",
        "<h2>Distributions of kept clips</h2>",
        "".join(_embedded(plots / name) for name in images),
        "<h2>Rejects</h2>",
        _table([(r["id"], r["stage"], r["reason"], r.get("message", "")[:300]) for r in rejects],
               ("id", "stage", "reason", "message")) if rejects else "<p>none</p>",
    ]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:90%}img{margin:4px}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>tandem curation report</title>" \
           f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
