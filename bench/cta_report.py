"""The study's reporting side (bench/cta_study.py measures): the paper's figures and the issue's
goals, the accuracy points and their selection, the Pareto front, the text tables, the plot and
the README's paper-form table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_LABEL = "all-MiniLM-L6-v2"


PAPER = {
    "source": "Wang et al., CTA, HPCA 2023 (attention, batch 1)",
    "no loss": {"speedup_vs_gpu": 27.7, "energy_vs_gpu": 634.0},
    "~1% loss": {"speedup_vs_gpu": 44.2, "energy_vs_gpu": 950.0},
    "vs ELSA + GPU": {"speedup": 22.8, "energy": 479.6},
}


GOALS = {  # the targets at L = 512, relative to exact attention on the accelerator
    "no loss": {"attention_rel": 0.5, "energy_rel": 0.9},
    "~1% loss": {"attention_rel": 0.33},
}


FLAG_RATIO = 1.01  # acceptance: CTA mode may not be slower than exact mode by more than this


@dataclass(frozen=True)
class Criteria:
    """An accuracy point of the paper: bounds on the cosines and the retrieval drop."""

    name: str
    cos_mean: float
    cos_min: float
    max_drop: int  # passages lost in paired-halves retrieval


POINTS = (Criteria("no loss", 0.999, 0.995, 0), Criteria("~1% loss", 0.99, -1.0, 1))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (x: cost, lower is better; y: accuracy, higher
    is better), ordered by x."""
    front = []
    for i, (x, y) in enumerate(points):
        beaten = any(ox <= x and oy >= y and (ox, oy) != (x, y) for ox, oy in points)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def meets(row: dict, criteria: Criteria) -> bool:
    return (
        row.get("error") is None
        and row["cos_mean"] >= criteria.cos_mean
        and row["cos_min"] >= criteria.cos_min
        and row["retrieval_drop_passages"] <= criteria.max_drop
    )


def pick(rows: Sequence[dict], criteria: Criteria) -> dict | None:
    """The CTA row meeting `criteria` with the fewest attention cycles, among those compressing
    at least one layer (the cost policy may keep all exact); None if none."""
    ok = [r for r in rows if r["kind"] in ("cta", "calibrated") and meets(r, criteria)]
    ok = [r for r in ok if r.get("compressed_layers") != 0]
    return min(ok, key=lambda r: r["attention_cycles"], default=None)


ROW_HEADER = (f"{'setting':<26}{'cos mean':>9}{'cos min':>9}{'retr':>6}{'drop':>5}{'attn rel':>9}"
              f"{'cyc rel':>8}{'E rel':>7}{'m/n q':>7}{'m/n kv':>7}{'xV100 a':>8}{'xELSA a':>8}")  # fmt: skip


def format_row(row: dict) -> str:
    if row.get("error") is not None:
        return f"{row['setting']:<26} not run: {row['error']}"
    return (
        f"{row['setting']:<26}{row['cos_mean']:>9.5f}{row['cos_min']:>9.5f}"
        f"{100 * row['retrieval']:>6.1f}{row['retrieval_drop_passages']:>+5d}"
        f"{row['attention_rel']:>9.3f}{row['cycles_rel']:>8.3f}{row['energy_rel']:>7.3f}"
        f"{row['q_clusters_per_token']:>7.3f}{row['kv_clusters_per_token']:>7.3f}"
        f"{row['vs_gpu']['attention_speedup']:>7.2f}x"
        + (f"{row['vs_elsa']['attention_speedup']:>7.2f}x" if "vs_elsa" in row else f"{'-':>8}")
    )


def plot_pareto(rows: Sequence[dict], length: int, hw_name: str, path: Path) -> None:
    """Mean cosine (axis spread as -log10(1 - cos), labelled in cosines) against attention cycles
    relative to exact; the Pareto front circled; nearby points share one label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("error") is None and "attention_rel" in r]
    points = [(r["attention_rel"], min(r["cos_mean"], 1 - 1e-7)) for r in ok]  # 1: drawn at 1-1e-7
    front = [points[i] for i in pareto_front(points)]
    colours = {"exact": "black", "elsa": "tab:orange", "cta": "tab:blue", "calibrated": "tab:green"}
    fig, ax = plt.subplots(figsize=(10, 6.5))
    nines = lambda c: -np.log10(np.maximum(1 - np.asarray(c, dtype=float), 1e-9))  # noqa: E731
    ax.set_yscale("function", functions=(nines, lambda v: 1 - 10.0 ** -np.asarray(v)))
    for kind, colour in colours.items():
        mine = [p for p, r in zip(points, ok, strict=True) if r["kind"] == kind]
        if mine:
            ax.scatter(*zip(*mine, strict=True), c=colour, label=kind, s=36, zorder=3)
    ax.plot(*zip(*front, strict=True), "r-", lw=1.5, alpha=0.6, zorder=2, label="Pareto front")
    ax.scatter(*zip(*front, strict=True), s=140, facecolors="none", edgecolors="red", zorder=4)
    span, groups = max(p[0] for p in points) - min(p[0] for p in points) or 1.0, []
    for i, (x, y) in enumerate(points):  # points closer than a label's size share one label
        near = (g for g in groups if abs(points[g[0]][0] - x) < 0.06 * span
                and abs(nines(points[g[0]][1]) - nines(y)) < 0.25)  # fmt: skip
        group = next(near, None)
        if group is None:
            groups.append([i])
        else:
            group.append(i)
    for group in groups:
        ax.annotate("\n".join(ok[i]["setting"] for i in group), points[group[0]], fontsize=7,
                    xytext=(5, 2), textcoords="offset points", va="bottom")  # fmt: skip
    for level, style in ((0.999, "--"), (0.99, ":")):
        ax.axhline(level, color="grey", ls=style, lw=0.8)
    low, high = min(p[1] for p in points), float(nines(max(p[1] for p in points)))
    ticks = [t for t in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.99999) if t > low - 0.1]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_ylim(top=1 - 10.0 ** -(high + 0.8))
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("attention cycles / exact attention cycles (accelerator)")
    ax.set_ylabel("mean cosine to exact (onnxruntime), mean-pooled")
    ax.set_title(f"{MODEL_LABEL}, L={length}, hw {hw_name}: accuracy vs attention cost")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_long(row: dict) -> str:
    if row.get("error") is not None:
        return f"{row['setting']:<24} not run: {row['error']}"
    return (f"{row['setting']:<24}{row['cycles']:>14,}{row['attention_rel']:>9.3f}"
            f"{row['cycles_rel']:>9.3f}{row['energy_rel']:>8.3f}"
            f"{row['vs_gpu']['attention_speedup']:>8.2f}x")  # fmt: skip


def format_acceptance(result: dict) -> str:
    policy = result["cli_defaults"]["cta_policy"]
    lines = [f"acceptance: `ctac compile --attention cta` (default policy '{policy}') / exact; "
             "'always': --cta-policy always / exact",
             f"{'model':<30}{'exact cycles':>14}{'cta cycles':>14}{'ratio':>8}{'compressed':>11}"
             f"{'always':>8}"]  # fmt: skip
    for r in result["rows"]:
        if r["error"]:
            lines.append(f"{r['model']:<30} not run: {r['error']}")
            continue
        layers = "all" if r["compressed_layers"] is None else r["compressed_layers"]
        lines.append(f"{r['model']:<30}{r['exact_cycles']:>14,.0f}{r['cta_cycles']:>14,.0f}"
                     f"{r['ratio']:>8.3f}{layers:>11}{r['always_ratio']:>8.3f}"
                     + (f"  <-- > {FLAG_RATIO}" if r["flagged"] else ""))  # fmt: skip
    return "\n".join(lines)


def goal_note(value: float, goal: dict, key: str) -> str:
    if key not in goal:
        return ""
    return f" (goal <= {goal[key]}: {'yes' if value <= goal[key] else 'no'})"


def markdown(payload: dict) -> str:
    """Speedup and energy saving of CTA at the paper's two accuracy points, beside its figures."""
    paper_elsa = PAPER["vs ELSA + GPU"]
    lines = [
        f"CTA on the `{payload['hw']['name']}` accelerator, {MODEL_LABEL}, batch 1, "
        f"{payload['passages']} evaluation passages; attention excludes the Q/K/V projections; "
        f"paper: {PAPER['source']}; goals: the issue's, at L = 512.",
        "",
        "| L | point | setting | cos mean / min | retrieval drop | attention vs exact | "
        "model energy vs exact | attention vs V100: speedup / energy (paper) | "
        "attention vs ELSA: speedup / energy (paper, vs ELSA+GPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for length, entry in payload["lengths"].items():
        for criteria in POINTS:
            row, paper, goal = (
                pick(entry["rows"], criteria),
                PAPER[criteria.name],
                GOALS[criteria.name],
            )
            if row is None:
                lines.append(f"| {length} | {criteria.name} | none meets it | | | | | | |")
                continue
            g, e = row["vs_gpu"], row.get("vs_elsa", {})
            lines.append(
                f"| {length} | {criteria.name} | {row['setting']} | {row['cos_mean']:.4f} / "
                f"{row['cos_min']:.4f} | {row['retrieval_drop_passages']} | {row['attention_rel']:.2f}x"
                f"{goal_note(row['attention_rel'], goal, 'attention_rel')} | {row['energy_rel']:.2f}x"
                f"{goal_note(row['energy_rel'], goal, 'energy_rel')} | {g['attention_speedup']:.2f}x / "
                f"{g['attention_energy']:.1f}x ({paper['speedup_vs_gpu']}x / "
                f"{paper['energy_vs_gpu']:.0f}x) | {e.get('attention_speedup', float('nan')):.2f}x"
                f" / {e.get('attention_energy', float('nan')):.2f}x ({paper_elsa['speedup']}x / "
                f"{paper_elsa['energy']}x) |"
            )
    if payload.get("long"):
        lines += ["", "| L (bert_long, timing only) | program | attention vs exact | cycles vs exact "
                  "| energy vs exact | attention vs V100 |", "|---|---|---|---|---|---|"]  # fmt: skip
        for entry in payload["long"]:
            for r in entry["rows"]:
                if r.get("error") is None and r["kind"] != "exact":
                    lines.append(f"| {entry['length']} | {r['setting']} | {r['attention_rel']:.2f}x "
                                 f"| {r['cycles_rel']:.2f}x | {r['energy_rel']:.2f}x | "
                                 f"{r['vs_gpu']['attention_speedup']:.2f}x |")  # fmt: skip
    return "\n".join(lines)
