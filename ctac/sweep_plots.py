"""The figures of `ctac sweep` (ctac/sweep.py): one per metric against an axis of the grid, a
panel per model, a line per combination of the other axes; and the Pareto front of cycles
against the error when the numerics are checked."""

from __future__ import annotations

from pathlib import Path

from ctac.files import write_atomically

METRICS = {  # column -> (axis label, scale)
    "cycles": ("cycles", 1.0),
    "energy_pj": ("energy (uJ)", 1e-6),
    "max_abs_err": ("max abs error vs onnxruntime", 1.0),
}
SEQUENCE = "sequence"  # the sequence-length axis' key in a spec and the table's column


def _axis_label(key: str) -> str:
    units = {
        "size_kib": "KiB",
        "bandwidth_gb_s": "GB/s",
        "clock_ghz": "GHz",
        "latency_cycles": "cycles",
        SEQUENCE: "tokens",
    }
    unit = next((u for suffix, u in units.items() if key.endswith(suffix)), "")
    return f"{key} ({unit})" if unit else key


def plot_metric(table, metric: str, axes: list[str], points, path: Path, image_format: str) -> None:
    """One figure: a panel per model, the metric against the first axis, a line per combination
    of the other axes; titled with the metric, the models' shapes and the fixed settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, scale = METRICS[metric]
    data = table[table[metric].notna()]
    models = list(dict.fromkeys(data["model"]))
    x_key = axes[0] if axes else None
    lines = axes[1:]
    figure, panels = plt.subplots(
        1, len(models), figsize=(5.5 * len(models) + 2.5, 4), squeeze=False
    )
    for panel, model in zip(panels[0], models, strict=True):
        rows = data[data["model"] == model]
        groups = rows.groupby(lines, sort=False, dropna=False) if lines else [((), rows)]
        for values, group in groups:
            values = values if isinstance(values, tuple) else (values,)
            name = ", ".join(f"{k}={v}" for k, v in zip(lines, values, strict=True)) or model
            xs = list(group[x_key]) if x_key else [0]
            xs = xs if all(isinstance(x, int | float) for x in xs) else [str(x) for x in xs]
            panel.plot(xs, [v * scale for v in group[metric]], marker="o", label=name)
        panel.set_title(f"{model}  {_shapes_title(rows)}", fontsize=9)
        panel.set_xlabel(_axis_label(x_key) if x_key else "")
        panel.set_ylabel(label)
        panel.grid(alpha=0.3)
    handles, names = panels[0][0].get_legend_handles_labels()
    if len(names) > 1:  # outside the panels, so it never covers data
        figure.legend(handles, names, loc="center right", fontsize=8, frameon=False)
    attention = ", ".join(sorted(set(table["attention"])))
    mode = "timing only" if bool(table["timing_only"].iloc[0]) else "functional"
    fixed = ", ".join(f"{k}={v}" for k, v in points[0].options.items() if k not in axes)
    figure.suptitle(f"{label} vs {x_key or 'model'}: attention {attention}, {mode}"
                    + (f", {fixed}" if fixed else ""), fontsize=10)  # fmt: skip
    figure.tight_layout(rect=(0, 0, 1 - 2.2 / figure.get_figwidth(), 1) if len(names) > 1 else None)
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=110, format=image_format)
    plt.close(figure)
    write_atomically(path, buffer.getvalue())


def _shapes_title(rows) -> str:
    """A panel's input shapes: the one set its points share, else the sequence lengths."""
    shapes = list(dict.fromkeys(rows["shapes"]))
    if len(shapes) == 1:
        return shapes[0]
    lengths = sorted({int(n) for n in rows[SEQUENCE].dropna()})
    return f"sequence {', '.join(map(str, lengths))} tokens" if lengths else "several shapes"


def pareto_front(costs: list[float], errors: list[float]) -> list[int]:
    """Indices of the points no other point beats on both cost and error, by cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], errors[i]))
    front, best = [], float("inf")
    for index in order:
        if errors[index] < best:
            front.append(index)
            best = errors[index]
    return front


def plot_pareto(table, axes: list[str], path: Path, image_format: str) -> None:
    """Cycles against the error, a panel per model: every point, its front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[table["max_abs_err"].notna()]
    models = list(dict.fromkeys(data["model"]))
    figure, panels = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for panel, model in zip(panels[0], models, strict=True):
        rows = data[data["model"] == model].reset_index(drop=True)
        costs, errors = list(rows["cycles"]), list(rows["max_abs_err"])
        panel.scatter(costs, errors, color="#999999", s=18, label="points")
        front = pareto_front(costs, errors)
        panel.plot([costs[i] for i in front], [errors[i] for i in front], "o-", color="#C44E52",
                   label="Pareto front")  # fmt: skip
        for i in front:
            text = ", ".join(f"{k}={rows.loc[i, k]}" for k in axes if k in rows)
            panel.annotate(text, (costs[i], errors[i]), fontsize=6, xytext=(3, 3),
                           textcoords="offset points")  # fmt: skip
        panel.set_title(f"{model}  {_shapes_title(rows)}", fontsize=9)
        panel.set_xlabel("cycles")
        panel.set_ylabel("max abs error vs onnxruntime")
        panel.grid(alpha=0.3)
        panel.legend(fontsize=7, loc="best")
    attention = ", ".join(sorted(set(table["attention"])))
    figure.suptitle(f"cycles vs error, Pareto front: attention {attention}", fontsize=10)
    figure.tight_layout()
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=110, format=image_format)
    plt.close(figure)
    write_atomically(path, buffer.getvalue())
