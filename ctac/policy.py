"""Cost-aware CTA policy: compress an attention layer only where it pays on this hardware.

Compression adds work (hashing, clustering, pooling, recovery) to save attention work that
shrinks with the clusters formed, so whether it pays depends on the hardware and on how many
clusters the data will form. The policy compiles the detected module twice, exact and
compressed, runs the cost model on both (timing only) with the compressed program's
data-dependent sizes set from an expected cluster ratio (clusters per token: a calibration's, or
the conservative default 1.0, no merging), and compares each transformer block's share of the
run (its span: blocks come from the IR, runtime/profile.py). A block whose compressed form is
not cheaper keeps exact attention (`cta-compress{keep-exact=...}`); each decision carries both
cycle counts and its reason.

Causal attention is also decided per tile of keys. Under the block-causal scheme a key block's
clusters serve only the queries of later blocks, while clustering it costs the same wherever it
is, so the last blocks pay least: the useful compressed set is a prefix of the key blocks. And
the block size trades raw keys (a query sees its own block exactly) against tile size (each
earlier block is one key tile, its clusters' rows; small tiles use the PE array poorly). The
policy compiles the compressed form at each block size (`causal-block`) and then at a few prefix
lengths (`compressed-blocks`); each causal layer takes the cheapest, or exact attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from ctac.dialects import cta
from ctac.dialects import onnx as ox
from ctac.hw import Hardware
from ctac.runtime.program import Program

DEFAULT_CLUSTER_RATIO = 1.0  # no merging: compression must pay even then to be chosen
ALL_ROLES = ""  # ClusterExpectation.layers key of a ratio that holds for every role


@dataclass(frozen=True)
class LayerDecision:
    attention: int  # index of the attention in program order (cta-compress keep-exact)
    layer: int  # its transformer block (IR layer)
    name: str
    compress: bool
    exact_cycles: int
    cta_cycles: int
    cluster_ratio: float
    reason: str
    # Causal attention: the leading key blocks clustered, of how many, and their size in
    # positions (0, 0, 0: not causal, or the spec's block).
    compressed_blocks: int = 0
    key_blocks: int = 0
    block_size: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClusterExpectation:
    """How many clusters the cost model should expect a run to form: per attention layer (in
    program order) and clustering role ('q', 'kv', 'qkv'), clusters per token as a calibration
    observed them, else `ratio` (the conservative default 1.0: no merging); and `buckets`, the
    effective number of hash buckets the tokens spread over."""

    ratio: float = DEFAULT_CLUSTER_RATIO
    buckets: float = 1.0
    layers: tuple[dict[str, float], ...] = ()  # per attention layer: role -> clusters per token

    def ratio_for(self, layer: int, role: str) -> float:
        """The layer's ratio for `role`; a layer given as {"": r} has r for every role."""
        roles = self.layers[layer] if 0 <= layer < len(self.layers) else {}
        return roles.get(role, roles.get(ALL_ROLES, self.ratio))

    def largest(self, layer: int) -> float:
        """The layer's largest expected ratio over its roles."""
        roles = self.layers[layer] if 0 <= layer < len(self.layers) else {}
        return max(roles.values(), default=self.ratio)

    def describe(self, layer: int) -> str:
        """'0.62 (q) / 0.81 (kv) clusters per token' or '1 clusters per token'."""
        roles = self.layers[layer] if 0 <= layer < len(self.layers) else {}
        text = " / ".join(
            f"{value:.3g}" if role == ALL_ROLES else f"{value:.3g} ({role})"
            for role, value in (roles or {ALL_ROLES: self.ratio}).items()
        )
        tail = f" over {self.buckets:.3g} effective hash buckets" if self.buckets != 1.0 else ""
        return f"{text} clusters per token{tail}"


def expected_clusters(
    program: Program, ratio: float | ClusterExpectation, buckets: float = 1.0
) -> dict[int, int]:
    """The data-dependent sizes a run forming `ratio` clusters per token would give: for each
    CLUSTER_READ (a sequence's clusters) ratio x its tokens; for each CLUSTER (rows compared per
    token) ratio x the rows its bucket holds on average, (rows before the chunk + half the chunk)
    over `buckets` equally used buckets. A ClusterExpectation gives each attention layer and role
    its own ratio (and its own buckets); the layer of an instruction is the rank of its source's
    attention name among the clustering instructions' names, in program order. The default, 1
    bucket, is conservative on purpose: real tokens crowd into few of the 2^bits hash buckets
    (the demo model compares each token with 16 rows where an even spread over 16 buckets
    predicts 2)."""
    from ctac.runtime.sources import parse_source

    expectation = (
        ratio if isinstance(ratio, ClusterExpectation) else ClusterExpectation(ratio, buckets)
    )
    nominal: dict[int, int] = {}
    for index, field_name, source, *offset in program.dynamic:
        if not field_name:
            continue
        value = program.instructions[index][1][field_name] + (offset[0] if offset else 0)
        nominal[source] = max(nominal.get(source, 0), value)
    layer_of: dict[str, int] = {}
    clusters = {}
    buckets = max(expectation.buckets, 1.0)
    for source in sorted(nominal):  # program order, which numbers the layers
        tokens = nominal[source]
        name, fields = program.instructions[source]
        parsed = parse_source(program.sources[source]) if source < len(program.sources) else None
        layer = layer_of.setdefault(parsed.name, len(layer_of)) if parsed else -1
        ratio_here = expectation.ratio_for(layer, parsed.role if parsed else "")
        if name == "CLUSTER":
            seen = fields["table_rows"] + fields["rows"] / 2
            clusters[source] = max(1, min(fields["scan"], math.ceil(ratio_here * seen / buckets)))
        else:
            clusters[source] = max(1, math.ceil(ratio_here * tokens))
    return clusters


def decide(
    detected: ModuleOp,
    compress_spec: str,
    hw: Hardware,
    cluster_ratio: float | ClusterExpectation = DEFAULT_CLUSTER_RATIO,
    buckets: float = 1.0,
    block_sizes: tuple[int, ...] = (),
    progress: Callable[[str], object] | None = None,
    candidates: list[tuple[ModuleOp, Program]] | None = None,
) -> list[LayerDecision]:
    """One decision per attention of the detected module (left unchanged), each layer at its
    own expected clusters when `cluster_ratio` is a ClusterExpectation. A causal layer also
    takes the cheapest of `block_sizes` (its key blocks; none given: the spec's `block`) and
    the cheapest prefix of those blocks to cluster. `progress` hears of each form compiled;
    `candidates`, if given, receives each form compiled with its program (compiled_form finds
    the final module among them, so `ctac compile` need not compile it again)."""
    from ctac.emit import compile_module
    from ctac.passes.assign_layers import layers_of
    from ctac.pipeline import run_passes
    from ctac.runtime.costmodel import simulate
    from ctac.runtime.profile import layer_block_names, per_block

    function = next(op for op in detected.ops if isinstance(op, func.FuncOp))
    layers = layers_of(function)
    attentions = [op for op in function.body.block.ops if isinstance(op, cta.AttentionOp)]
    if not attentions:
        return []
    tell = progress or (lambda what: None)
    tell("exact")
    exact_module = detected.clone()
    exact = compile_module(exact_module, hw)
    if candidates is not None:
        candidates.append((exact_module, exact))
    exact_profile = simulate(exact, hw)
    exact_spans = per_block(exact_profile)
    # "layer k", or "encoder/decoder layer k" in an encoder-decoder model (runtime/profile.py).
    block_names = layer_block_names(exact_profile)
    expectation = (
        cluster_ratio
        if isinstance(cluster_ratio, ClusterExpectation)
        else ClusterExpectation(cluster_ratio, buckets)
    )
    every = len(attentions)
    compiled: dict[tuple[int, int], tuple[dict, list[int]]] = {}
    # Compressed modules made (passes only) and not compiled yet: key_blocks needs no compile,
    # and a block size that leaves every layer one block is never compiled.
    forms: dict[tuple[int, int], tuple[str, ModuleOp]] = {}

    def form(size: int, count: int) -> tuple[str, ModuleOp]:
        """The detected module compressed with causal attentions in key blocks of `size` (0:
        the spec's) clustering their first `count` (0: all but the last), and its options."""
        if (size, count) not in forms:
            options = [
                f"{name}={','.join([str(value)] * every)}"
                for name, value in (("causal-block", size), ("compressed-blocks", count))
                if value
            ]
            spec = f"{compress_spec[:-1]} {' '.join(options)}}}" if options else compress_spec
            module = detected.clone()
            run_passes(module, spec)
            forms[size, count] = " ".join(options) or "compressed", module
        return forms[size, count]

    def blocks(size: int) -> list[int]:
        """Each attention's key blocks in blocks of `size` (0: not causal), compiled or not."""
        if (size, 0) in compiled:
            return compiled[size, 0][1]
        return key_blocks(form(size, 0)[1], every)

    def compressed(size: int, count: int) -> tuple[dict, list[int]]:
        """Per transformer block span cycles of the form (see `form`), and each attention's key
        blocks (0: not causal)."""
        if (size, count) not in compiled:
            name, module = form(size, count)
            del forms[size, count]
            tell(name)
            program = compile_module(module, hw)
            if candidates is not None:
                candidates.append((module, program))
            profile = simulate(program, hw, expected_clusters(program, expectation))
            compiled[size, count] = per_block(profile), key_blocks(module, every)
        return compiled[size, count]

    def span(table: dict, layer_name: str) -> int:
        return int(table.get(layer_name, {}).get("span_cycles", 0))

    causal = any(op.int_attr("causal", 0) for op in attentions)
    sizes = block_sizes if causal and block_sizes else (0,)
    decisions = []
    for index, attention in enumerate(attentions):
        layer = layers.get(attention, index)
        layer_name = block_names.get(layer, f"layer {layer}")
        exact_cycles = span(exact_spans, layer_name)
        cta_cycles = span(compressed(sizes[0], 0)[0], layer_name)
        size = count = key_count = 0
        tried = ""
        # Causal over several key blocks: the cheapest block size (each clustering all its
        # blocks but the last), then the cheapest prefix of its blocks.
        by_size = {s: span(compressed(s, 0)[0], layer_name) for s in sizes if blocks(s)[index] > 1}
        if by_size:
            size = min(by_size, key=lambda s: (by_size[s], -s))  # ties: more raw keys
            key_count = blocks(size)[index]
            spans = {key_count - 1: by_size[size]}
            for candidate in prefix_candidates(key_count):
                spans.setdefault(candidate, span(compressed(size, candidate)[0], layer_name))
            count = min(spans, key=lambda c: (spans[c], c))  # ties: less clustering
            cta_cycles = spans[count]
            if len(by_size) > 1:
                tried += "; key blocks of " + _tried(by_size, size)
            tried += f"; its first {count} of {key_count} key blocks clustered ({_tried(spans)})"
        source = attention.attributes.get("ctac.source")
        name = getattr(source, "data", f"attention {index}")
        pays = 0 < cta_cycles < exact_cycles
        verdict = "compress" if pays else "keep exact"
        reason = (
            f"{verdict}: block {layer} takes {cta_cycles:,} cycles compressed vs "
            f"{exact_cycles:,} exact at {expectation.describe(index)}{tried}"
        )
        decisions.append(
            LayerDecision(
                index, layer, name, pays, exact_cycles, cta_cycles, expectation.largest(index),
                reason, count, key_count, size,
            )
        )  # fmt: skip
    return decisions


def compiled_form(module: ModuleOp, candidates: list[tuple[ModuleOp, Program]]) -> Program | None:
    """The program of the candidate (decide's) that `module` is, op for op (pipeline.same_module),
    but for the policy record `module` carries (the candidates were compiled before it was made),
    given that record; None if no candidate is. Every layer deciding alike makes the final module
    one the policy compiled."""
    from ctac.emit import policy_record
    from ctac.passes.lower_to_isa import POLICY_ATTRIBUTE
    from ctac.pipeline import same_module

    for candidate, program in candidates:
        if same_module(module, candidate, ignored_attributes=(POLICY_ATTRIBUTE,)):
            return replace(program, policy=policy_record(module))
    return None


def _tried(cycles: dict[int, int], chosen: int | None = None) -> str:
    """'256 (tried 64: 1,234, 256: 999)' or 'tried 1: 1,234, 2: 999'."""
    listed = ", ".join(f"{key}: {cycles[key]:,}" for key in sorted(cycles))
    return f"{chosen} (tried {listed})" if chosen is not None else f"tried {listed}"


# Key block sizes the policy tries for causal attention when --cta-block is not given.
CAUSAL_BLOCK_SIZES = (64, 128, 256, 512)
MAX_PREFIX_CANDIDATES = 6  # compiles per decision beyond the default prefix


def prefix_candidates(blocks: int) -> list[int]:
    """Compressed prefixes (in key blocks) to try for causal attention over `blocks` blocks:
    every count from 1 to blocks - 1, or MAX_PREFIX_CANDIDATES spread over that range."""
    if blocks <= 1:
        return []
    top = blocks - 1
    if top <= MAX_PREFIX_CANDIDATES:
        return list(range(1, top + 1))
    step = (top - 1) / (MAX_PREFIX_CANDIDATES - 1)
    return sorted({round(1 + i * step) for i in range(MAX_PREFIX_CANDIDATES)})


def key_blocks(compressed: ModuleOp, attentions: int) -> list[int]:
    """For each attention (program order: cta-compress replaces each in place), the key
    blocks of its block-causal compressed form; 0 where it is not causal (or stayed exact)."""
    found = []
    for op in compressed.walk():
        if isinstance(op, cta.AttentionOp):
            found.append(0)
        elif isinstance(op, cta.CompressedAttentionOp):
            keys = ox.shape_of(op.key_tokens)[2] if op.key_tokens is not None else 0
            block = op.int_attr("block", 0) or keys
            causal = op.int_attr("causal", 0) and keys
            found.append(-(-keys // block) if causal else 0)
    return (found + [0] * attentions)[:attentions]


RATIO_LADDER = (1.0, 0.5, 0.25, 0.125, 0.0625)


def ratio_sweep(
    program: Program, hw: Hardware, ratios: tuple[float, ...] = RATIO_LADDER
) -> list[tuple[float, int]]:
    """(clusters per token, cycles) of a compressed program, timing only, for each ratio."""
    from ctac.runtime.costmodel import simulate

    return [
        (ratio, simulate(program, hw, expected_clusters(program, ratio)).cycles) for ratio in ratios
    ]


def policy_options(decisions: list[LayerDecision]) -> str:
    """The cta-compress options of the decisions: the layers left exact (keep-exact) and the
    causal layers' compressed key blocks (compressed-blocks); "" if neither."""
    kept = [str(d.attention) for d in decisions if not d.compress]
    options = [f"keep-exact={','.join(kept)}"] if kept else []
    for name, values in (
        ("compressed-blocks", [d.compressed_blocks for d in decisions]),
        ("causal-block", [d.block_size for d in decisions]),
    ):
        if any(values):
            options.append(f"{name}={','.join(str(value) for value in values)}")
    return " ".join(options)
