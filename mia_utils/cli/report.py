"""The audit's report: the checks printed before any attack, and ``summary.html``."""

from __future__ import annotations

from html import escape


def provenance_lines(checks: dict) -> list[str]:
    """The guardrails (``evidence.provenance``; the captions' source) as the lines the audit prints."""
    blind = checks["model-blind"]
    lines = [f"model-blind baseline (pixels alone, members vs non-members): AUC {blind['auc']:.3f} "
             f"[{blind['auc_ci'][0]:.3f}, {blind['auc_ci'][1]:.3f}]",
             f"overlap across the splits: {checks['exact overlaps']} identical images, "
             f"{checks['near-copies']} near-copies"]
    if checks.get("captions"):
        lines.append(f"captions: {checks['captions']}")
    if checks["warning"]:
        lines.append(f"WARNING: {checks['warning']}")
    return lines


def _planned(plan: dict | None) -> str:
    """A chapter's plan beside what it did: queries planned / counted, estimated minutes, what --budget changed."""
    if not plan:
        return ""
    measured = plan.get("measured") or {}
    counted = (f", counted {measured['forward']:,}" + (f" + {measured['grad']:,}" if measured.get("grad") else "")
               if measured else "")
    grad = f" + {plan['grad']:,} with gradients" if plan["grad"] else ""
    changed = "".join(f"; --budget set {escape(k)} {escape(str(v['from']))} → {escape(str(v['to']))}"
                      for k, v in plan["changed"].items())
    return f"; planned {plan['forward']:,} queries{grad}{counted}, about {plan['estimated_minutes'] * 60:.0f} s{changed}"


def summary_html(table, checkpoint, members, nonmembers, times, skipped=None, checks=(), plan=None) -> str:
    """``summary.html``: the inputs, the checks before any attack, one table of every attack, the
    executed chapters (their measured seconds beside the plan) and the skipped ones."""
    rows = table.to_html(index=False, border=0, classes="summary", escape=True) if len(table) else "<p>No metrics.</p>"
    chapters = "".join(f"<li>{escape(k)}.ipynb ({v} s{_planned((plan or {}).get(k))})</li>" for k, v in times.items())
    chapters += "".join(f"<li>{escape(k)}: skipped, it needs {escape(v)}</li>" for k, v in (skipped or {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Membership audit: {escape(str(checkpoint))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}} table{{border-collapse:collapse}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}}</style></head>
<body><h1>Membership audit</h1>
<p>Checkpoint <code>{escape(str(checkpoint))}</code>; members <code>{escape(str(members))}</code>;
non-members <code>{escape(str(nonmembers))}</code>.</p>
<p>Every number is honest: hyper-parameters and thresholds were chosen on a calibration part of the
given members and non-members and reported on the rest, with 95 % bootstrap intervals in brackets.</p>
<h2>Before any attack</h2><ul>{"".join(f"<li>{escape(line)}</li>" for line in checks)}</ul>
<h2>Attacks</h2>
{rows}
<h2>Executed chapters</h2><ul>{chapters}</ul>
</body></html>
"""
