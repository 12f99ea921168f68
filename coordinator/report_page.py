"""Render a run report (coordinator/report.py RunReport, or the JSON it saves) as an HTML page with PNG plots.

``write_report_page(report, json_path)`` writes ``<stem>.html`` next to ``json_path`` and three
plots into ``<stem>-plots/``: the task's headline metric per round (``study.metric`` in the report;
test accuracy when absent), epsilon spent per hospital, patients used per round. The page is self-contained (inline CSS, no JavaScript, no external resources) and every
string taken from the report is HTML-escaped. Missing optional keys render as "—". The demo's additions
(``revoked``, ``audit``, ``baseline``, ``generated_at``) are read from the report's extra keys when present.
"""
from __future__ import annotations

import html
import pathlib
from typing import Any

import matplotlib

from coordinator.report import RoundRecord, RunReport
from federation.ids import Pseudonym

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem;color:#111;background:#fff;line-height:1.5}
h1,h2{line-height:1.2}.wrap{overflow-x:auto}table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{border:1px solid #999;padding:.3rem .6rem;text-align:left;vertical-align:top}th{background:#e8e8e8}
td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;height:auto;display:block;margin:1rem 0}
.ok{color:#fff;background:#17692f;padding:.5rem}.bad{color:#fff;background:#a4161a;padding:.5rem}code{word-break:break-all}
"""

MARKERS = "osD^vP"  # distinct hollow markers keep overlapping hospitals (same ε) visible


def _e(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return html.escape(fmt.format(value)) if isinstance(value, (int, float)) else _e(value)


def _short(pseudonym: Any) -> str:
    """'0x' + first 10 hex digits + '…' (the full 64-hex pseudonym is not needed to read the page)."""
    try:
        return Pseudonym.parse(pseudonym).short(10)
    except ValueError:
        return str(pseudonym or "")[:12] + "…"


def _table(headers: list[str], rows: list[list[str]], caption: str) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return (f'<div class="wrap"><table><caption>{_e(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _td(text: str, numeric: bool = False) -> str:
    return f'<td class="n">{text}</td>' if numeric else f"<td>{text}</td>"


ACCURACY = {"name": "accuracy", "label": "Test accuracy", "unit": "%", "scale": 100.0, "low": 0.0, "high": 1.0}
POOLED = "pooled test set"


def _metric(report: RunReport) -> dict:
    """The headline metric the task declared (federation/tasks/base.py Metric); accuracy for older reports."""
    metric = report.study.metric
    return {**ACCURACY, **metric} if isinstance(metric, dict) and metric.get("name") else ACCURACY


def _value(record: RoundRecord, metric: dict) -> float | None:
    """A round's headline value as shown (scaled), or None when the round has none."""
    value = record.value(metric["name"])
    return None if value is None else value * float(metric.get("scale") or 1.0)


def _format(metric: dict) -> str:
    """The shown value's format: the metric's decimals (1 if it names none) and its unit."""
    unit = metric.get("unit") or ""
    return f"{{:.{int(metric.get('decimals', 1))}f}}" + (unit if unit in ("", "%") else f" {unit}")


def _y_range(metric: dict, shown: list[float]) -> tuple[float | None, float | None]:
    """The axis: the metric's declared range (scaled), from its chance level when every value is above it, so
    that a C-index going 0.515 -> 0.775 is not drawn flat on a 0-100 axis; unbounded sides follow the data."""
    scale = float(metric.get("scale") or 1.0)
    low, high, chance = (metric.get(k) for k in ("low", "high", "chance"))
    bottom = low * scale if low is not None else (0.0 if all(v >= 0 for v in shown) else None)
    if chance is not None and shown and min(shown) >= chance * scale:
        margin = 0.1 * ((high * scale if high is not None else max(shown)) - chance * scale)
        bottom = chance * scale - margin
    return bottom, (high * scale if high is not None else None)


def _extra(report: RunReport, key: str, kind: type) -> Any:
    """One of the demo's additions, or an empty one of its kind."""
    value = report.extra(key)
    return value if isinstance(value, kind) else kind()


def _plots(report: RunReport, names: list[str], out: pathlib.Path) -> list[tuple[str, str]]:
    """Draw the three plots into ``out``; return (file name, alt text) pairs."""
    out.mkdir(parents=True, exist_ok=True)
    rounds = report.rounds
    xs = [r.round for r in rounds]
    colours = plt.get_cmap("tab10").colors
    made: list[tuple[str, str]] = []

    metric = _metric(report)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    acc = [_value(r, metric) for r in rounds]
    ax.plot(xs, [float("nan") if a is None else a for a in acc], "o-", color=colours[0],
            label=f"global model ({metric.get('pooling') or POOLED})")
    for x, a in zip(xs, acc):
        if a is None:  # evaluation failed: leave a gap and say so
            ax.annotate("no result", (x, 3), ha="center", fontsize="small", color="dimgray")
    is_accuracy = metric["name"] == "accuracy"
    base = _extra(report, "baseline", dict).get("constant_predictor_accuracy") if is_accuracy else None
    if base is not None:
        ax.axhline(100 * base, ls="--", color=colours[7], label="constant predictor")
    scale = float(metric.get("scale") or 1.0)
    if metric.get("chance") is not None:
        ax.axhline(metric["chance"] * scale, ls=":", color=colours[7], label=f"chance ({metric['chance']:g})")
    unit = f" ({metric['unit']})" if metric.get("unit") else ""
    ax.set(title=f"{metric['label']} per round", xlabel="Round", ylabel=f"{metric['label']}{unit}")
    bottom, top = _y_range(metric, [a for a in acc if a is not None])
    ax.set_ylim(bottom=bottom, top=top)
    made.append(("accuracy.png" if is_accuracy else "metric.png",
                 f"Line chart of the global model's {metric['label'].lower()}{unit} per round"
                 + (f", with the constant-predictor baseline at {100 * base:.1f}%" if base is not None else "")))
    _finish(fig, ax, xs, out / made[-1][0])

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, name in enumerate(names):
        eps = [r.epsilon.get(name) for r in rounds]
        ax.plot(xs, [float("nan") if e is None else e for e in eps], "-", marker=MARKERS[i % len(MARKERS)],
                ms=11 - 2 * (i % 4), mfc="none", mew=1.6, color=colours[i % 10], label=name)
    budgets = {h.name: h.epsilon_budget for h in report.hospitals}
    budgets = {k: v for k, v in budgets.items() if v is not None}
    if len(set(budgets.values())) == 1:
        ax.axhline(next(iter(budgets.values())), ls="--", color="black", label="budget")
    else:
        for i, name in enumerate(names):
            if name in budgets:
                ax.axhline(budgets[name], ls="--", color=colours[i % 10], label=f"budget ({name})")
    ax.set(title="Cumulative privacy budget spent per hospital", xlabel="Round", ylabel="Epsilon spent (ε)")
    ax.set_ylim(0, 1.12 * max(ax.get_ylim()[1], *budgets.values(), 0.1))
    made.append(("epsilon.png", "Line chart of cumulative epsilon spent per hospital per round, "
                 "with dashed lines at the epsilon budget"))
    _finish(fig, ax, xs, out / made[-1][0])

    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        used = [r.used.get(name) or 0 for r in rounds]
        ax.bar([x - 0.4 + width * (i + 0.5) for x in xs], used, width, color=colours[i % 10], label=name)
    revoked = [v.get("block") for v in _extra(report, "revoked", list) if isinstance(v, dict) and v.get("block") is not None]
    if revoked:
        after = [x for x, r in zip(xs, rounds) if (r.block or -1) >= min(revoked)]
        if after:
            ax.axvline(after[0] - 0.5, ls=":", color="black", lw=2, label="revocations")
    counted = report.study.weighted_by or "patients"
    what = "Consented patients used" if counted == "patients" else f"Training {counted} (the FedAvg weight)"
    ax.set(title=f"{what} for training per round", xlabel="Round", ylabel=f"{counted.capitalize()} (count)")
    made.append(("patients.png", f"Grouped bar chart of {what.lower()} per hospital per round"
                 + (", with a dotted line before the first round after a revocation" if revoked else "")))
    _finish(fig, ax, xs, out / made[-1][0])
    return made


def _finish(fig: Any, ax: Any, xs: list, path: pathlib.Path) -> None:
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report_page(report: RunReport | dict, json_path: pathlib.Path) -> pathlib.Path:
    """Write ``<stem>.html`` and ``<stem>-plots/*.png`` beside ``json_path``; return the HTML path.

    A dict (a report.json read by a caller, perhaps with the demo's additions) is read as a RunReport."""
    report = RunReport.coerce(report)
    json_path = pathlib.Path(json_path)
    html_path = json_path.with_suffix(".html")
    plot_dir = json_path.parent / f"{json_path.stem}-plots"
    study, audit = report.study, _extra(report, "audit", dict)
    hospitals, rounds = report.hospitals, report.rounds
    names = report.hospital_names()  # hospitals seen only in rounds still get a line/column
    plots = _plots(report, names, plot_dir)

    metric = _metric(report)
    shown = _format(metric)
    final = next((_value(r, metric) for r in reversed(rounds) if _value(r, metric) is not None), None)
    violations = audit.get("violations")
    summary = (f"Study purpose <strong>{_e(study.purpose)}</strong>, task {_e(study.task)}: "
               f"{len(rounds)} round(s) of {_e(study.rounds)} planned, last evaluated "
               f"{_e(metric['label'].lower())} {_num(final, shown)}, "
               f"{_e(violations)} audit violation(s).")

    hosp_rows = [[_td(_e(h.name)), _td(_e(h.patients), True), _td(_e(h.consented), True),
                  _td(f"{_num(h.epsilon_spent, '{:.2f}')} / {_num(h.epsilon_budget, '{:.2f}')}", True)]
                 for h in hospitals]
    has_errors = any(r.errors for r in rounds)
    round_rows = []
    for r in rounds:
        used, errs = r.used, r.errors
        row = [_td(_e(r.round), True), _td(_e(r.block), True), _td(_num(_value(r, metric), shown), True)]
        row += [_td(_e(used.get(n)), True) for n in names]
        if has_errors:
            row.append(_td("<br>".join(f"{_e(k)}: {_e(v)}" for k, v in errs.items()) or "—"))
        round_rows.append(row)
    round_head = ["Round", "Pinned block", (metric["label"][5:].capitalize() if metric["label"].startswith("Test ") else metric["label"])] + [f"Used: {n}" for n in names] + (["Errors"] if has_errors else [])
    scale = float(metric.get("scale") or 1.0)
    chance = metric.get("chance")
    about = (f"<p>{_e(metric['label'])}: {_e(metric.get('description') or 'the task’s headline metric')} "
             f"({_e(metric.get('pooling') or POOLED)}"
             + (f"; chance level {_num(chance * scale, shown)}" if isinstance(chance, (int, float)) else "")
             + "). Each value is computed from the nodes’ noisy (differentially private) sums.</p>")
    fair = next((r for r in reversed(rounds) if r.subgroup_metrics), None)
    by_group = "" if fair is None else "<h2>Per subgroup</h2>" + _table(
        ["Subgroup", "Group", f"{metric['label']}, round {fair.round}"],
        [[_td(_e(axis)), _td(_e(group)), _td(_num(None if m.get(metric["name"]) is None
                                                   else m[metric["name"]] * scale, shown), True)]
         for axis, groups in fair.subgroup_metrics.items() for group, m in groups.items()],
        "The headline metric for each group the task declares, from the same noisy sums as the pooled value")
    last = next((r for r in reversed(rounds) if r.hospital_metrics), None)
    by_hospital = "" if last is None else "<h2>Per hospital</h2>" + _table(
        ["Hospital", f"{metric['label']}, round {last.round}"],
        [[_td(_e(name)), _td(_num(None if m.get(metric["name"]) is None else m[metric["name"]] * scale, shown), True)]
         for name, m in last.hospital_metrics.items()],
        "The headline metric from each hospital's own test patients (noisier than the pooled value)")
    rev = [v for v in _extra(report, "revoked", list) if isinstance(v, dict)]
    rev_rows = [[_td(f"<code>{_e(_short(v.get('pseudonym')))}</code>"), _td(_e(v.get("block")), True),
                 _td(_e(v.get("hospital")))] for v in rev]

    clean = violations == 0 and not audit.get("commitment_mismatches")
    verdict = ('<p class="ok">✔ Audit passed: no training used a patient without consent at the pinned block.</p>'
               if clean else '<p class="bad">✘ Audit FAILED or incomplete: see the counts above.</p>')
    title = f"TwinLedger run report — study {study.id or '?'}"
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1><p>{summary}</p>",
        f"<p>Generated at {_e(report.extra('generated_at'))}; ε budget {_e(study.epsilon_budget)}, "
        f"δ {_e(study.delta)}.</p>",
        "<h2>Hospitals</h2>" + _table(["Hospital", "Patients", "Consented", "ε spent / budget"], hosp_rows, "Hospitals"),
        "<h2>Rounds</h2>" + about + _table(round_head, round_rows, "Rounds") + by_hospital + by_group,
        "<h2>Revocations</h2>" + (_table(["Pseudonym", "Block", "Hospital"], rev_rows, "Consent revocations")
                                  if rev_rows else "<p>No consent was revoked during the run.</p>"),
        f"<h2>Audit</h2><ul><li>Violations: {_e(violations)}</li><li>Records checked: {_e(audit.get('checked'))}</li>"
        f"<li>Commitment mismatches: {_e(audit.get('commitment_mismatches'))}</li></ul>{verdict}",
        "<h2>Plots</h2>",
    ]
    parts += [f'<figure><img src="{_e(plot_dir.name)}/{_e(f)}" alt="{_e(alt)}"><figcaption>{_e(alt)}</figcaption></figure>'
              for f, alt in plots]
    parts.append("</main></body></html>\n")
    html_path.write_text("\n".join(parts), encoding="utf-8")
    return html_path
