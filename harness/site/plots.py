"""Each task's Pareto plot as SVG, drawn by the leaderboard's own `pareto_figure` so the site and the PNG beside
leaderboard.md show the same points. SVG ids come from a fixed hash salt and the date is left out, so the same rows
give the same bytes."""

from __future__ import annotations

import io

from slimbench.harness.report.rows import LeaderboardRow

HASH_SALT = "slimbench-site"


def pareto_svg(rows: list[LeaderboardRow], task: str) -> bytes:
    import matplotlib

    from slimbench.harness.report.build import pareto_figure

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": HASH_SALT}):   # glyphs as paths: the key's columns keep their width
        pareto_figure(rows, task, "svg", buf, {"Date": None})
    return buf.getvalue()


def alt_text(rows: list[LeaderboardRow], task: str, suite: str) -> str:
    """What the plot shows, in words, for a reader who cannot see it."""
    task_rows = [r for r in rows if r.task == task]
    best = max(task_rows, key=lambda r: r.accuracy)
    smallest = min(task_rows, key=lambda r: r.stored_bytes)
    return (f"{task}, suite {suite}: test accuracy against stored size and against batch-1 CPU latency for "
            f"{len(task_rows)} settings (log axes, baselines in orange, the Pareto front dashed). Most accurate: "
            f"{best.model} {best.method} at {best.accuracy:.4f}; smallest: {smallest.model} {smallest.method} at "
            f"{smallest.stored_bytes / 1024:,.1f} KiB with accuracy {smallest.accuracy:.4f}.")
