"""Differential testing at full size: random attention graphs compiled in exact mode vs onnxruntime.

The generator and the check are tests/test_differential.py's (1-16 heads with GQA, sequence
1-257, head dim 8-128, masks, causal, each scale form); here the shapes go up to
B*H*Sq*Skv = 2**21 and every example runs (a mismatch is recorded, not shrunk). Configurations
that hit a known, documented refusal (`known_limit`) are counted and skipped, so `--examples`
counts compared examples. Prints a summary and writes bench/results/differential.json.

    python bench/differential.py --examples 500 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, assume, given, seed, settings

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "tests"))

import test_differential as differential  # noqa: E402


def run(examples: int, random_seed: int, max_elements: int) -> dict:
    records: list[dict] = []

    @seed(random_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(differential.configs(max_elements=max_elements))
    def one(config: differential.Config) -> None:
        limit = differential.known_limit(config)
        record: dict = {"config": config.__dict__}
        start = time.perf_counter()
        if limit is not None:  # counted, then assumed away: --examples counts compared ones
            record.update(outcome="known_limit", why=limit, seconds=0.0)
            records.append(record)
            assume(False)
        else:
            with tempfile.TemporaryDirectory() as work:
                try:
                    record.update(differential.check(config, Path(work)), outcome="pass")
                except Exception as exc:  # noqa: BLE001 - every mismatch or crash is recorded
                    record.update(
                        outcome="FAIL",
                        why=f"{type(exc).__name__}: {str(exc)[:500]}",
                        traceback=traceback.format_exc()[-1500:],
                    )
        record["seconds"] = round(time.perf_counter() - start, 3)
        records.append(record)

    one()
    outcomes = Counter(r["outcome"] for r in records)
    compared = [r for r in records if r["outcome"] != "known_limit"]
    passed = [r for r in records if r["outcome"] == "pass"]
    configs = [r["config"] for r in records]
    return {
        "examples": len(compared),
        "known_limit_skipped": outcomes.get("known_limit", 0),
        "seed": random_seed,
        "max_elements": max_elements,
        "tolerance": differential.TOLERANCE,
        "outcomes": dict(outcomes),
        "failures": outcomes.get("FAIL", 0),
        "max_error": max((r["max_error"] for r in passed), default=0.0),
        "coverage": {
            "heads": [min(c["heads"] for c in configs), max(c["heads"] for c in configs)],
            "q_len": [min(c["q_len"] for c in configs), max(c["q_len"] for c in configs)],
            "kv_len": [min(c["kv_len"] for c in configs), max(c["kv_len"] for c in configs)],
            "head_dim": sorted({c["head_dim"] for c in configs}),
            "gqa": sum(c["kv_heads"] != c["heads"] for c in configs),
            "causal": sum(c["causal"] for c in configs),
            "mask": dict(Counter(c["mask"] for c in configs)),
            "scale_form": dict(Counter(c["scale_form"] for c in configs)),
        },
        "records": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-elements", type=int, default=1 << 21)
    parser.add_argument("--out", type=Path, default=RESULTS / "differential.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run(args.examples, args.seed, args.max_elements)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(
        f"{report['examples']} examples: {report['outcomes']}; max error {report['max_error']:.2e}"
        f" (tolerance {report['tolerance']}); {report['wall_seconds']} s"
    )
    print(f"coverage: {json.dumps(report['coverage'])}")
    for record in [r for r in report["records"] if r["outcome"] == "FAIL"][:20]:
        print(f"  FAIL {record['config']}: {record['why'][:300]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
