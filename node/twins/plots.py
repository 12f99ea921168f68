"""PNG plots of a twin's what-if trajectories and forecasts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from node.twins.forecast import Forecast  # noqa: E402
from node.twins.whatif import WhatIfResult  # noqa: E402

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _range_background(ax) -> None:
    ax.axhspan(70, 180, color="#2ca02c", alpha=0.08, lw=0)
    for level, style in ((54, ":"), (70, "--"), (180, "--")):
        ax.axhline(level, color="grey", lw=0.8, ls=style)
    ax.set_ylabel("CGM glucose (mg/dL)")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def whatif_png(result: WhatIfResult) -> bytes:
    """One panel: each plan's median trajectory with its 5-95% ensemble band; meals marked; a table of TIR."""
    fig, ax = plt.subplots(figsize=(10, 5))
    hours = result.time_min / 60.0
    _range_background(ax)
    for k, outcome in enumerate(result.outcomes):
        colour = COLOURS[k % len(COLOURS)]
        g = outcome.glucose_mgdl
        tir = outcome.median["time_in_range_70_180"]
        ax.fill_between(hours, np.percentile(g, 5, axis=0), np.percentile(g, 95, axis=0), color=colour, alpha=0.15, lw=0)
        ax.plot(hours, np.median(g, axis=0), color=colour, lw=1.6,
                label=f"{outcome.plan.name}: TIR {tir:.0%}, <70 {outcome.median['time_below_70']:.0%}")
    for time_min, carbs_g in result.meals:
        ax.annotate(f"{carbs_g:.0f} g", (time_min / 60.0, ax.get_ylim()[0]), xytext=(0, 4), textcoords="offset points",
                    fontsize=7, ha="center", color="dimgrey")
    ax.set_xlabel("hours from now")
    ax.set_title(f"What-if for {result.patient_id}: median and 5-95% over {result.members} calibrated twins")
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def forecast_png(forecast: Forecast, *, history_mgdl=None, history_min: int = 180) -> bytes:
    """The forecast with its band, after the last `history_min` of CGM readings if given."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    _range_background(ax)
    if history_mgdl is not None:
        recent = np.asarray(history_mgdl, dtype=float)[-history_min:]
        t = (np.arange(len(recent)) - len(recent)) / 60.0
        seen = np.isfinite(recent)
        ax.plot(t[seen], recent[seen], ".", color="black", ms=3, label="CGM")
    hours = forecast.time_min / 60.0
    ax.fill_between(hours, forecast.low_mgdl, forecast.high_mgdl, color=COLOURS[0], alpha=0.2, lw=0, label="5-95%")
    ax.plot(hours, forecast.median_mgdl, color=COLOURS[0], lw=1.6, label="twin forecast (median)")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("hours from now")
    ax.set_title(f"Forecast for {forecast.patient_id} from {forecast.origin:%Y-%m-%d %H:%M} UTC")
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)
