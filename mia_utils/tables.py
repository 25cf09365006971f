"""The book's tables: the one results table (``table``, ``show``), split in two so that each
fits the page (``stacked``), and the table of multi-class probes.

Chapters and the summary page build their tables here, so column names and formats cannot
drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from .metrics import format_ci

COLUMNS = {
    "auc": "AUC [95 % CI]",
    "p": "p",  # the AUC's label-permutation p-value (evidence, chapter 08)
    "tpr": "TPR@1%FPR (%)",
    "tpr01": "TPR@0.1%FPR (%)",
    "n": "n members / non-members",  # per side, evaluated: what a TPR at an FPR can resolve
    "transfer": "FPR / TPR at the calibrated 1% threshold",
    "access": "access",
    "queries": "queries",
    "backward": "backward passes",
    "seconds": "s",
}


def _row_cells(row: dict) -> dict:
    cal = row.get("calibrated_at_1pct_fpr")
    return {
        COLUMNS["auc"]: format_ci(row, "auc"),
        COLUMNS["p"]: f"{row['auc_p']:.1g}" if "auc_p" in row else "",
        COLUMNS["tpr"]: format_ci(row, "tpr_at_1pct_fpr", pct=True),
        COLUMNS["tpr01"]: format_ci(row, "tpr_at_0_1pct_fpr", pct=True),
        COLUMNS["n"]: f"{row['n_members']}/{row['n_nonmembers']}" if "n_members" in row else "",
        COLUMNS["transfer"]: f"{100 * cal['fpr']:.1f} / {100 * cal['tpr']:.1f}" if cal else "",
        COLUMNS["access"]: row.get("access", ""),
        COLUMNS["queries"]: f"{row['queries_per_image']:g}" if "queries_per_image" in row else "",
        COLUMNS["backward"]: f"{row['backward_per_image']:g}" if row.get("backward_per_image") else "",
        COLUMNS["seconds"]: f"{row['seconds']:.1f}" if "seconds" in row else "",
    }


def table(results: Mapping[str, dict], setting: bool = True, oracle: bool = False, group: str | None = None,
          extra: Mapping[str, str] | None = None):
    """The book's results table: numbers first, then access level, cost (queries per image,
    seconds) and the setting the calibration split chose.

    ``results`` maps a row name to an ``evaluate`` result ({"honest": row, ...}) or to a row
    itself (``metrics.evaluate``'s format, as metrics.json stores it). ``setting`` adds the
    calibration-chosen setting; ``oracle`` the oracle setting and AUC; ``group`` names an extra
    first column whose value is each row's ``group`` entry (the summary groups by chapter);
    ``extra`` maps further column names to row keys (``{"encoder passes": "encoder_passes"}``).
    """
    records = []
    for name, res in results.items():
        row = res.get("honest", res)
        rec = {group: row.get("group", "")} if group else {}
        rec["attack"] = name
        rec.update(_row_cells(row))
        if setting:
            rec["setting"] = str(row.get("setting", ""))
        if oracle:  # empty for a row without one (a probe trained on calibration has no oracle t)
            rec["oracle: setting, AUC"] = (f"{res['oracle'].get('setting', '')}, {res['oracle']['auc']:.3f}"
                                           if "oracle" in res else "")
        for column, key in (extra or {}).items():
            value = row.get(key, "")
            rec[column] = f"{value:.3g}" if isinstance(value, float) else str(value)
        records.append(rec)
    out = pd.DataFrame.from_records(records)
    if COLUMNS["backward"] in out and not out[COLUMNS["backward"]].astype(bool).any():
        out = out.drop(columns=COLUMNS["backward"])  # forward-only attacks: no empty column
    return out


def show(results: Mapping[str, dict], **kwargs):
    """``table`` for a notebook, ready to ``display``: as ``stacked`` shows it (no index)."""
    return stacked(table(results, **kwargs))


# Our columns whose header may wrap (its values never do: "1024/1024")
WRAPPED = (COLUMNS["n"],)
# The numbers of the results table; the other columns say how each row was obtained.
NUMBER_COLUMNS = tuple(COLUMNS[k] for k in ("auc", "p", "tpr", "tpr01", "n"))


class Stacked:
    """Tables shown one under the other in a notebook (HTML), each without its index; plain text
    elsewhere. ``parts``: the DataFrames; ``numbers``: their columns of figures, never wrapped."""

    def __init__(self, parts, numbers=NUMBER_COLUMNS):
        self.parts, self.numbers = list(parts), tuple(numbers)

    def _repr_html_(self) -> str:
        html = []
        for part in self.parts:  # numbers stay on one line (book.css); words (settings, names) may wrap
            words = [c for c in part.columns if c in WRAPPED or (c not in COLUMNS.values() and c not in self.numbers)]
            style = part.style.hide(axis="index").set_properties(subset=words, **{"white-space": "normal"})
            html.append(style.to_html())
        return "".join(html)

    def __repr__(self) -> str:
        return "\n\n".join(part.to_string(index=False) for part in self.parts)


def stacked(frame, key: str = "attack", numbers: Iterable[str] = NUMBER_COLUMNS) -> Stacked:
    """A results table (``table``'s columns) as two tables that each fit the book's page: the
    numbers (``NUMBER_COLUMNS``), then how each row was obtained (calibrated transfer, access,
    queries, seconds, setting and any other column), both led by the columns up to ``key``.

    Our own because no library splits a table by width: in one table the 10 to 13 columns were
    850 to 1,370 px wide, the page's text 757, and every chapter's costs sat off-screen.
    """
    numbers = tuple(numbers)
    if key not in frame.columns:
        return Stacked([frame], numbers)
    lead = list(frame.columns[: frame.columns.get_loc(key) + 1])
    figures = [c for c in frame.columns if c in numbers]
    rest = [c for c in frame.columns if c not in lead and c not in figures]
    if not figures or not rest:
        return Stacked([frame], numbers)
    return Stacked([frame[lead + figures], frame[lead + rest]], numbers)


def metrics_rows(results: Mapping[str, dict]) -> dict[str, dict]:
    """{name: honest row} for ``nbrun.save_metrics``: the rows every chapter's metrics.json holds."""
    return {name: res.get("honest", res) for name, res in results.items()}


def multiclass_table(rows: Mapping[str, dict]):
    """The table of multi-class probes (origin or model attribution): balanced accuracy with its
    CI, each class's recall, and the cost, one row per probe (``probes.multiclass`` rows)."""
    frame = pd.DataFrame.from_records([{
        "probe": name, "balanced accuracy [95 % CI]": format_ci(r, "balanced_accuracy"),
        **{f"recall: {c}": f"{v:.2f}" for c, v in r["recall"].items()},
        "access": r.get("access", ""), "forward queries": f"{r['queries_per_image']:g}",
        "backward passes": f"{r['backward_per_image']:g}",
    } for name, r in rows.items()])
    figures = [c for c in frame.columns if c.startswith(("balanced accuracy", "recall: "))]
    return stacked(frame, key="probe", numbers=figures)


def quality_table(rows: Mapping[str, dict]):
    """Chapter 05's quality rows (``quality.latent_quality``): held-out reconstruction error,
    precision and recall of each model's samples, three decimals."""
    return (pd.DataFrame(rows).T[["reconstruction MSE", "precision", "recall"]]
            .rename(columns={"reconstruction MSE": "reconstruction ‖x − D(μ(x))‖² (held-out)",
                             "precision": "precision (realism)", "recall": "recall (coverage)"}).style.format("{:.3f}"))
