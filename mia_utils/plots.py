"""The book's figures: one seaborn style, one colour per split, the same in every chapter."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from . import metrics
from .quality import PIXEL

COLORS = {
    "members": "#c0392b",     # red: the training set
    "nonmembers": "#2471a3",  # blue: held-out images of the same distribution
    "generated": "#7d3c98",   # purple: the model's own samples
    "public": "#7f8c8d",      # grey: public data
}
# chapter 04's groups by their names there: the same colours, DDIM's samples in orange
COLORS.update({"external": COLORS["nonmembers"], "generated (DDPM)": COLORS["generated"],
               "generated (DDIM)": "#d35400"})
LINE_COLORS = sns.color_palette("colorblind")


def set_style() -> None:
    """The book's style: seaborn ticks, readable fonts, crisp inline figures."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "figure.figsize": (6.0, 3.6),
                         "axes.spines.top": False, "axes.spines.right": False})


def image_grid(images: torch.Tensor, ncol: int = 16, ax=None, title: str | None = None):
    """Show [N, C, H, W] images in [-1, 1] as one grid (grey or RGB)."""
    x = ((images.detach().cpu().float().clamp(-1, 1) + 1) / 2).numpy()
    n, c, h, w = x.shape
    nrow = int(np.ceil(n / ncol))
    pad = 1
    # white gaps: 0 is white in the reversed grey map used for one channel, 1 is white in RGB
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 0.0 if c == 1 else 1.0)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        canvas[top: top + h, left: left + w] = x[i].transpose(1, 2, 0)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(12, 0.45 * ncol + 1), 0.45 * nrow + 0.6))
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray_r" if c == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def roc_loglog(curves: dict, ax=None, title: str | None = None, colors=None):
    """ROC curves on log–log axes (low FPR is where privacy lives).

    ``curves`` maps a label to (member scores, non-member scores); ``colors`` one colour per
    curve (default: the palette in order).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    lo = 1.0
    for (label, (m, n)), color in zip(curves.items(), colors or LINE_COLORS):
        f, t, _ = metrics.roc(m, n)
        keep = f > 0
        ax.plot(f[keep], t[keep], color=color, label=f"{label} (AUC {metrics.auc(m, n):.3f})")
        lo = min(lo, 1 / max(len(n), 1))
    grid = np.logspace(np.log10(lo), 0, 50)
    ax.plot(grid, grid, ls="--", color="0.6", lw=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1.02), xlabel="false-positive rate",
           ylabel="true-positive rate")
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def score_hist(members, nonmembers, ax=None, xlabel: str = "score (higher = member)",
               labels: tuple[str, str] = ("members", "nonmembers"), title: str | None = None):
    """Overlaid histograms of member and non-member scores, the splits' colours."""
    if ax is None:
        _, ax = plt.subplots()
    both = np.r_[np.ravel(members), np.ravel(nonmembers)]
    bins = np.histogram_bin_edges(both, bins=40)
    for scores, label in zip((members, nonmembers), labels):
        ax.hist(np.ravel(scores), bins=bins, alpha=0.55, color=COLORS.get(label, None), label=label, density=True)
    ax.set(xlabel=xlabel, ylabel="density")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def t_axis(ax, ts) -> None:
    """The time-step axis: linear up to 1, logarithmic above (t = 0 stays on the axis)."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    ax.set_xlim(0, max(ts) * 1.15)
    ax.set_xlabel("time step t")


def metric_vs_t(ts, values: dict, ax=None, ylabel: str = "AUC", chance: float | None = 0.5,
                title: str | None = None, log_t: bool = True):
    """A metric against the time step t, one line per attack/setting (symlog t by default)."""
    if ax is None:
        _, ax = plt.subplots()
    for (label, v), color in zip(values.items(), LINE_COLORS):
        ax.plot(ts, v, marker="o", ms=3, color=color, label=label)
    if chance is not None:
        ax.axhline(chance, ls="--", color="0.6", lw=1)
    ax.set(xlabel="time step t", ylabel=ylabel)
    if log_t:
        t_axis(ax, ts)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def auc_band(lines: dict, ax=None, xlabel: str | None = None, ylabel: str = "AUC", title: str | None = None,
             chance: float | None = 0.5, categorical: bool = False, log_t: bool = False, ms: float = 5):
    """AUC against a swept quantity with its 95 % bootstrap interval as a band: ``lines`` maps a
    label to {x: metrics row} (rows with ``auc`` and ``auc_ci``, in the order to draw). With
    ``categorical`` the x values are evenly spaced labels (fine-tuning steps); with ``log_t`` the
    axis is ``t_axis``'s. The chapters draw every AUC-over-a-sweep figure with it."""
    if ax is None:
        _, ax = plt.subplots()
    for (label, rows), color in zip(lines.items(), LINE_COLORS):
        xs = list(rows)
        pos = np.arange(len(xs)) if categorical else xs
        ax.plot(pos, [rows[x]["auc"] for x in xs], marker="o", ms=ms, color=color, label=label)
        ax.fill_between(pos, [rows[x]["auc_ci"][0] for x in xs], [rows[x]["auc_ci"][1] for x in xs], color=color,
                        alpha=0.2, lw=0)
        if categorical:
            ax.set_xticks(pos, [str(x) for x in xs])
    if chance is not None:
        ax.axhline(chance, ls="--", color="0.6", lw=1)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if log_t:
        t_axis(ax, [x for rows in lines.values() for x in rows])
    if title:
        ax.set_title(title)
    if any(lines):
        ax.legend(fontsize="small")
    return ax


def loss_curve(log: list[dict], ax=None, title: str | None = "training loss"):
    """The training log's loss against the optimiser step (log scale)."""
    if ax is None:
        _, ax = plt.subplots()
    ax.plot([e["step"] for e in log], [e["loss"] for e in log], color=LINE_COLORS[0])
    ax.set(xlabel="training step", ylabel="DDPM loss (MSE)", yscale="log")
    if title:
        ax.set_title(title)
    return ax


def figure_slider(figures: dict, description: str = "t"):
    """A slider that flips between pre-rendered figures and keeps working without a kernel.

    ``figures`` maps a label (a time step, say) to a matplotlib figure. Each figure is rendered
    to PNG once and closed; the slider and a Stack of the images are linked in the browser
    (``jslink``), so the built, static book stays interactive offline. Show it beside a static
    figure of the default setting, never instead of one.
    """
    import io

    import ipywidgets as widgets

    images = []
    for fig in figures.values():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        images.append(widgets.Image(value=buf.getvalue(), format="png"))
    stack = widgets.Stack(images, selected_index=0)
    slider = widgets.SelectionSlider(options=[(str(k), i) for i, k in enumerate(figures)], description=description,
                                     continuous_update=True, layout=widgets.Layout(width="60%"))
    widgets.jslink((slider, "index"), (stack, "selected_index"))
    return widgets.VBox([slider, stack])


def bands_vs_t(ts, groups: dict, ax=None, ylabel: str = "value", log_y: bool = True,
               title: str | None = None, colors: dict | None = None):
    """Median and inter-quartile band over images of a per-t feature, one band per group.

    ``groups`` maps a label to an [N, len(ts)] array (say L_t of the members).
    """
    if ax is None:
        _, ax = plt.subplots()
    for (label, v), color in zip(groups.items(), LINE_COLORS):
        color = (colors or {}).get(label, COLORS.get(label, color))
        q1, med, q3 = np.percentile(np.asarray(v), [25, 50, 75], axis=0)
        ax.plot(ts, med, color=color, label=label, lw=1.5)
        ax.fill_between(ts, q1, q3, color=color, alpha=0.2, lw=0)
    ax.set(xlabel="time step t", ylabel=ylabel, yscale="log" if log_y else "linear")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def confusions(rows: dict, names, figsize=(11, 4)):
    """The confusion matrices of some multi-class probe rows (``probes.Groups.multiclass``), side by side."""
    fig, axes = plt.subplots(1, len(names), figsize=figsize, squeeze=False)
    for ax, name in zip(axes[0], names):
        confusion(rows[name]["confusion"], rows[name]["classes"], ax=ax, title=name)
    fig.tight_layout()
    return fig


def loss_bands(ts, bands: dict, colors: dict | None = None, reference: str = "members"):
    """Two panels: L_t's median and quartiles over t per group, and the same divided by the
    ``reference`` group's median at each t (1: "as low as a training image")."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    bands_vs_t(ts, bands, ax=axes[0], ylabel=r"$L_t$ (median, quartiles)", colors=colors,
               title="the model's loss along the trajectory")
    median = np.median(bands[reference], axis=0)
    bands_vs_t(ts, {k: v / median for k, v in bands.items()}, ax=axes[1], colors=colors,
               ylabel=rf"$L_t$ / {reference}' median", title=f"relative to the {reference}")
    axes[1].axhline(1, color="0.4", lw=1, ls=":")
    fig.tight_layout()
    return fig


def confusion(cm, classes, ax=None, title: str | None = None):
    """A confusion matrix, rows (true class) normalised to 1, as an annotated heatmap."""
    cm = np.asarray(cm, dtype=float)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 0.9 * len(classes) + 1))
    sns.heatmap(share, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False,
                xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set(xlabel="predicted", ylabel="true")
    ax.tick_params(axis="x", rotation=20)
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title)
    return ax


def threshold_figure(members, nonmembers, threshold: float, title: str = "", figsize=(5.5, 3.2)):
    """Score histograms with a decision threshold: "member" above it; the TPR and FPR it gives."""
    m, n = np.ravel(members), np.ravel(nonmembers)
    fig, ax = plt.subplots(figsize=figsize)
    score_hist(m, n, ax=ax)
    ax.axvline(threshold, color="k", lw=1.5)
    tpr, fpr = float(np.mean(m > threshold)), float(np.mean(n > threshold))
    ax.set_title(f"{title}threshold {threshold:.3g}: TPR {100 * tpr:.1f} %, FPR {100 * fpr:.1f} %")
    return fig


def threshold_slider(members, nonmembers, n: int = 15, title: str = ""):
    """A slider over ``n`` thresholds (quantiles of all scores), each with its TPR / FPR figure
    (``figure_slider``: works in the static book without a kernel)."""
    both = np.r_[np.ravel(members), np.ravel(nonmembers)]
    taus = np.quantile(both, np.linspace(0.05, 0.95, n))
    return figure_slider({f"{tau:.3g}": threshold_figure(members, nonmembers, tau, title) for tau in taus},
                         description="threshold")


def auc_bars(panels: dict, figsize=(7, 5.5)):
    """One horizontal bar chart per panel ({title: {row name: metrics row}}): each row's AUC with
    its 95 % CI, model-blind rows in grey, chance dashed. Returns the figure."""
    fig, axes = plt.subplots(len(panels), 1, figsize=figsize, sharex=True, squeeze=False)
    for ax, (title, rows) in zip(axes[:, 0], panels.items()):
        names = list(rows)
        aucs = [rows[n]["auc"] for n in names]
        err = [[rows[n]["auc"] - rows[n]["auc_ci"][0] for n in names],
               [rows[n]["auc_ci"][1] - rows[n]["auc"] for n in names]]
        ax.barh(names, aucs, xerr=err, color=["0.5" if "blind" in n else LINE_COLORS[0] for n in names])
        ax.axvline(0.5, ls="--", color="0.6", lw=1)
        ax.set(xlim=(0.3, 1.0), title=title)
        ax.invert_yaxis()
    axes[-1, 0].set_xlabel("AUC (95 % CI)")
    fig.tight_layout()
    return fig


def privacy_utility(results: dict, quality: dict, attacks, what: str = "images", key: str = "SimA p=4"):
    """Chapter 05's figure from ``studies.latent.latent_study`` and ``quality.latent_quality``: each
    attack's AUC (95 % CI band) against the latent models (dotted: the pixel model), and the
    ``key`` attack's AUC against sample recall, the pixel model starred."""
    latents = [k for k in quality if k in results and k != PIXEL]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = np.arange(len(latents))
    for attack, color in zip(attacks, LINE_COLORS):
        axes[0].plot(xs, [results[b][attack]["auc"] for b in latents], marker="o", color=color, label=attack)
        axes[0].fill_between(xs, [results[b][attack]["auc_ci"][0] for b in latents],
                             [results[b][attack]["auc_ci"][1] for b in latents], color=color, alpha=0.12, lw=0)
        axes[0].axhline(results[PIXEL][attack]["auc"], color=color, ls=":", lw=1.2)
    axes[0].axhline(0.5, ls="--", color="0.6", lw=1)
    axes[0].set_xticks(xs, latents)
    axes[0].set(ylabel="AUC (honest)", title="leakage against β (dotted: the pixel DDPM)")
    axes[0].legend(fontsize="small")
    recall = [quality[b]["recall"] for b in latents]
    auc = [results[b][key]["auc"] for b in latents]
    axes[1].scatter(recall, auc, color=LINE_COLORS[0])
    for b, r, a in zip(latents, recall, auc):
        axes[1].annotate(b, (r, a), textcoords="offset points", xytext=(4, 4), fontsize="small")
    axes[1].scatter([quality[PIXEL]["recall"]], [results[PIXEL][key]["auc"]], marker="*", s=120,
                    color=COLORS["members"], label="pixel DDPM")
    axes[1].set(xlabel=f"sample quality: recall (coverage of real {what})", ylabel=f"{key} AUC (honest)",
                title="privacy against utility")
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def cost_tradeoff(rows: dict):
    """AUC and TPR at 1 % FPR (95 % CIs) of each attack's honest row against its counted queries
    per image and its seconds per image: what more queries buy (chapter 03)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col")
    for (name, r), color in zip(rows.items(), LINE_COLORS):
        for i, key in enumerate(("auc", "tpr_at_1pct_fpr")):
            for j, x in enumerate((r["queries_per_image"], 1 / r["images_per_second"])):
                axes[i, j].errorbar(x, r[key], yerr=[[r[key] - r[key + "_ci"][0]], [r[key + "_ci"][1] - r[key]]],
                                    fmt="o", color=color, capsize=3, label=name)
    for j, xlabel in enumerate(("queries per image (counted)", "seconds per image (this machine)")):
        axes[1, j].set(xscale="log", xlabel=xlabel)
        axes[1, j].xaxis.set_minor_formatter(plt.NullFormatter())
    q_ticks = sorted({r["queries_per_image"] for r in rows.values()})
    axes[1, 0].set_xticks(q_ticks, [f"{q:g}" for q in q_ticks])
    axes[0, 0].set(ylabel="AUC (honest, 95 % CI)")
    axes[1, 0].set(ylabel="TPR at 1 % FPR (honest, 95 % CI)")
    axes[0, 0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def sensitivity(curves: dict, panels: dict):
    """AUC against a hyper-parameter, one line per curve ({name: (xs, aucs)}), one panel per
    entry of ``panels`` ({title: (x label, [curve names])}); chance (0.5) dashed."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    colors = dict(zip(curves, LINE_COLORS))
    for ax, (title, (xlabel, names)) in zip(axes[0], panels.items()):
        for name in names:
            ax.plot(*curves[name], marker="o", ms=3, color=colors[name], label=name)
        ax.set(xlabel=xlabel, ylabel="AUC (evaluation)", title=title)
        ax.axhline(0.5, ls="--", color="0.6", lw=1)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def epoch_choice(history: dict):
    """SecMI_NN's AUC per epoch on the held-out calibration part (which chooses the epoch) and on
    the evaluation split (never used to choose), the chosen epoch dotted."""
    fig, ax = plt.subplots()
    epochs = np.arange(1, len(history["val_auc"]) + 1)
    ax.plot(epochs, history["val_auc"], label="held-out calibration (chooses the epoch)")
    ax.plot(epochs, history["monitor_auc"], label="evaluation split (never used to choose)")
    ax.axvline(history["chosen_epoch"], ls=":", color="0.4")
    ax.set(xlabel="epoch", ylabel="AUC", title="SecMI_NN: choosing the epoch")
    ax.legend(fontsize="small")
    return fig


def k_curves(curves: dict, alpha: float = 0.01):
    """The set test's p-value against the suspect set's size k: per attack ({name: k_curve's
    result}), the median over draws with its interquartile band, members as suspects (solid)
    and non-members as suspects (dashed: the false-positive check); ``alpha`` dotted."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for (name, c), color in zip(curves.items(), LINE_COLORS):
        for ax, key, ls in ((axes[0], "member", "-"), (axes[1], "null", "--")):
            q1, med, q3 = np.percentile(c[key], [25, 50, 75], axis=1)
            ax.plot(c["ks"], med, ls=ls, marker="o", ms=3, color=color, label=name)
            ax.fill_between(c["ks"], q1, q3, color=color, alpha=0.15, lw=0)
    for ax, title in zip(axes, ("suspects: members (was my collection used?)",
                                "suspects: non-members (false-positive check)")):
        ax.axhline(alpha, ls=":", color="0.3", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="suspect images k", title=title)
        ax.set_xticks(curves[next(iter(curves))]["ks"], [str(k) for k in curves[next(iter(curves))]["ks"]])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    axes[0].set(ylabel="p-value (median, quartiles)")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def guidance_jitter(studies: dict, assumed: float, figsize=(10, 3.4)):
    """Chapter 07's guidance study: for each target ({name: {γ₁: row}}, rows of
    ``studies.text_to_image.noise_probe_guidance``), the AUC [CI] and the balanced accuracy against the actual
    generation guidance, with the threshold calibrated at ``assumed`` (solid) and re-calibrated
    at each γ₁ (dotted)."""
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    for (name, rows), color in zip(studies.items(), LINE_COLORS):
        gs = list(rows)
        axes[0].plot(gs, [rows[g]["auc"] for g in gs], marker="o", color=color, label=name)
        axes[0].fill_between(gs, [rows[g]["auc_ci"][0] for g in gs], [rows[g]["auc_ci"][1] for g in gs], color=color,
                             alpha=0.15, lw=0)
        axes[1].plot(gs, [rows[g]["balanced_accuracy"] for g in gs], marker="o", color=color,
                     label=f"{name}: threshold from γ₁={assumed:g}")
        axes[1].plot(gs, [rows[g]["own_threshold_accuracy"] for g in gs], ls=":", color=color,
                     label=f"{name}: re-calibrated")
    for ax, what in zip(axes, ("AUC", "balanced accuracy")):
        ax.axhline(0.5, ls="--", color="0.6", lw=1)
        ax.axvline(assumed, color="0.8", lw=1)
        ax.set(xlabel="actual generation guidance γ₁", ylabel=what)
    axes[0].legend(fontsize="small")
    axes[1].legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def reference_fits(target, references, inside, picks: dict, t_label: str = "", sigma=None, figsize=(11, 3.2)):
    """LiRA's picture, one panel per picked image ({title: image index}): the reference models'
    signals on that image, IN (red) and OUT (blue) as ticks, the Gaussians fitted to them (per-image
    means; ``sigma`` = (σ_in, σ_out) global, else each side's own spread), the target's signal as a
    black line. ``target`` [N], ``references`` [R, N], ``inside`` [R, N]: one time step's signals."""
    from scipy.stats import norm

    fig, axes = plt.subplots(1, len(picks), figsize=figsize, sharey=False)
    for ax, (title, n) in zip(np.atleast_1d(axes), picks.items()):
        r, s = np.asarray(references)[:, n], float(np.asarray(target)[n])
        lo, hi = min(r.min(), s), max(r.max(), s)
        grid = np.linspace(lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo), 300)
        for k, (side, mask) in enumerate((("IN", inside[:, n]), ("OUT", ~inside[:, n]))):
            color = COLORS["members" if side == "IN" else "nonmembers"]
            ax.plot(r[mask], np.zeros(mask.sum()), "|", ms=18, mew=2, color=color)
            sd = sigma[k] if sigma is not None else max(r[mask].std(), 1e-6)
            ax.plot(grid, norm.pdf(grid, r[mask].mean(), sd), color=color, label=f"{side} references ({mask.sum()})")
        ax.axvline(s, color="black", lw=1.5, label="target")
        ax.set(title=title, xlabel=f"signal −log L{t_label}", yticks=[])
    np.atleast_1d(axes)[0].legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    return fig


def metric_vs_references(rows: dict, panels: dict, baseline: str | None = None, figsize=(11, 3.4)):
    """Each panel ({key: y label}) against the number of reference models k, one line per variant
    with its 95 % interval as a band: ``rows`` maps (variant, k) to a ``metrics.evaluate`` row;
    a (``baseline``, 0) row is drawn as a dotted horizontal line. TPRs that the row's non-members
    cannot resolve (``metrics.resolvable``) are left out rather than drawn."""
    fig, axes = plt.subplots(1, len(panels), figsize=figsize)
    variants = list(dict.fromkeys(v for v, _ in rows if v != baseline))
    for ax, (key, label) in zip(np.atleast_1d(axes), panels.items()):
        scale = 100 if key.startswith("tpr") else 1

        def ok(row, key=key):
            return key not in metrics.FPR_TARGETS or metrics.resolvable(row["n_nonmembers"], metrics.FPR_TARGETS[key])

        for variant, color in zip(variants, LINE_COLORS):
            pts = sorted((k, r) for (v, k), r in rows.items() if v == variant and ok(r))
            if not pts:
                continue
            ks = [k for k, _ in pts]
            ax.plot(ks, [scale * r[key] for _, r in pts], marker="o", ms=4, color=color, label=variant)
            ax.fill_between(ks, [scale * r[f"{key}_ci"][0] for _, r in pts], [scale * r[f"{key}_ci"][1] for _, r in pts],
                            color=color, alpha=0.15, lw=0)
        if baseline is not None and (baseline, 0) in rows and ok(rows[(baseline, 0)]):
            ax.axhline(scale * rows[(baseline, 0)][key], ls=":", color="0.3", lw=1.2, label=f"{baseline} (no reference)")
        ks_all = sorted({k for (_, k) in rows if k > 0})
        ax.set(xscale="log", xlabel="reference models k", ylabel=label)
        ax.set_xticks(ks_all, [str(k) for k in ks_all])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()  # one legend under the panels
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def null_ecdf(curves: dict, alpha: float = 0.01, figsize=(4.6, 4.0)):
    """The set test's calibration under the null: for each attack ({name: k_curve's result}), the
    empirical CDF of the p-values when the suspects are non-members, all sizes k pooled, against
    the uniform (the diagonal). A valid test lies on or below it: P(p ≤ α) ≤ α. Log axes show the
    small p-values an accusation rests on; ``alpha`` dotted."""
    fig, ax = plt.subplots(figsize=figsize)
    lo = 1.0
    for (name, c), color in zip(curves.items(), LINE_COLORS):
        p = np.sort(np.asarray(c["null"], float).ravel())
        ecdf = np.arange(1, len(p) + 1) / len(p)
        ax.step(p, ecdf, where="post", color=color, label=name)
        lo = min(lo, 1 / len(p))
    grid = np.logspace(np.log10(lo), 0, 50)
    ax.plot(grid, grid, ls="--", color="0.5", lw=1, label="uniform (a valid test: on or below)")
    ax.axvline(alpha, ls=":", color="0.3", lw=1)
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1.05), xlabel="p-value (suspects: non-members)",
           ylabel="share of draws with a p-value ≤ x")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig


def defense_frontier(points: dict, attack: str, key: str = "tpr_at_1pct_fpr", groups: dict | None = None,
                     figsize=(11, 4.6)):
    """Chapter 10's privacy–utility frontier: one point per model ({name: (utility row, the
    attack's honest row)}), the attack's ``key`` (TPR at 1 % FPR by default, with its 95 % interval)
    against sample recall (left) and the held-out loss (right, lower = better). ``groups``
    ({name: group}) colours the points by kind of defense; each point carries its number, and the
    legend under the panels names the numbers (names written beside points overlap)."""
    scale = 100 if key.startswith("tpr") else 1
    kinds = list(dict.fromkeys((groups or {}).get(n, "") for n in points))
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True)
    handles = []
    for i, (name, (u, row)) in enumerate(points.items(), start=1):
        color = LINE_COLORS[kinds.index((groups or {}).get(name, "")) % len(LINE_COLORS)]
        y, (lo, hi) = scale * row[key], (scale * row[f"{key}_ci"][0], scale * row[f"{key}_ci"][1])
        for ax, ux in zip(axes, ("recall", "held-out loss")):
            ax.errorbar(u[ux], y, yerr=[[y - lo], [hi - y]], fmt="o", color=color, capsize=3, ms=5, alpha=0.85)
            ax.annotate(str(i), (u[ux], y), textcoords="offset points", xytext=(4, 3), fontsize="small")
        handles.append(plt.Line2D([], [], ls="", marker="o", color=color, label=f"{i}  {name}"))
    axes[0].set(xlabel="sample recall (coverage of held-out images; → better)",
                ylabel=f"{attack}: {'TPR at 1 % FPR (%)' if key == 'tpr_at_1pct_fpr' else key}")
    axes[1].set(xlabel="held-out ε-loss per pixel (← better)")
    if key.startswith("tpr"):
        for ax in axes:
            ax.axhline(scale * 0.01, ls="--", color="0.6", lw=1)  # chance: TPR = FPR
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize="small", frameon=False)
    rows = -(-len(handles) // 3)
    fig.tight_layout(rect=(0, 0.055 * rows + 0.02, 1, 1))
    return fig
