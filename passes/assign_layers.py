"""assign-layers: `onnx` + `cta` in, the same ops out, each with `ctac.layer` (an IntAttr).

Why: profiles group instructions into transformer blocks. Reading the block from op names
(`layer.3`, `h.3`) fails for exporters with generic names (dynamo's `val.12`, `matmul.3`) and for
the ops compression adds, which have no name. The graph itself says where a block begins and
ends, so the layer is decided here, from structure, and carried to every instruction's source
string by lower-to-isa (see ctac.runtime.sources).

Layers: -1 for the ops before the first transformer block (embeddings, mask preprocessing that
precedes it), k in 0..L-1 for block k, L for the ops after the last block (final norm, heads).

How blocks are found:
1. Anchors. Every `cta.attention` / `cta.compressed_attention` anchors one block, in body order.
   Its compression group (the `cta.cluster` / `cta.pool` / `cta.project` ops feeding it, walked
   back through those op kinds only, and the `cta.recover` reading it) belongs to its block; an
   op shared by two attentions belongs to the first. Mask operands are not followed: a mask is
   preprocessed once for all layers.
2. Block input. The residual skip around attention k is the first Add after the group that adds
   a descendant of the attention to a value r_k that is an ancestor of the group's inputs (not a
   weight or constant, same size as the sum). r_k is the residual stream entering block k: the
   output of the previous block's last LayerNorm for post-LN models (BERT, RoBERTa, DistilBERT),
   the previous block's FFN residual Add for pre-LN models (GPT-2, ViT). Block k begins right
   after the op that defines r_k (through Reshape/Flatten/Squeeze/Unsqueeze/Cast aliases), so the
   FFN of block k - 1, and its post-LN LayerNorm, stay in block k - 1.
3. End of the last block. From the attention's residual Add a, the stream goes on either
   directly (pre-LN) or through one LayerNorm (post-LN) to the FFN's residual Add f: the first
   Add that adds that value to something computed from it through a MatMul, Gemm, Conv or cta op.
   The last block ends at f (pre-LN: the final norm is the head's) or at the LayerNorm reading f
   (post-LN: that norm is the block's own output norm). Without an FFN it ends at a.
4. Positions. Layers are intervals of the function body order, which is the order lower-to-isa
   walks, so every block's instructions are contiguous in the program. An op the exporter placed
   between two blocks (a constant, a weight transpose, mask preprocessing) takes the block of its
   position, which is the first block reading it or an earlier one; ops are never moved. For
   the same reason an op of attention k's group placed before attention k - 1 (hoisted
   projections) is counted in block k - 1: contiguity wins.

Fallbacks (hand-written modules): without a residual Add, block k begins at the first op after
block k - 1's group that is an ancestor of attention k (or at the group itself) and the last
block ends at its group. A function without attention has no blocks: no op gets a layer
(`compute_layers` returns {}), and instructions carry no layer.

Encoder-decoder models (T5, BART): a decoder block holds a self-attention and a cross-attention.
An attention is a cross-attention when the attention before it is an ancestor of its query but
not of its key (its keys and values come from another stack, the encoder's output, while a
self-attention's keys come from the same stream as its queries; masks are not followed). It
joins the preceding attention's block: the block's input stream is the self-attention's, its end
follows from the cross-attention's residual. The blocks holding a cross-attention are the
decoder's; the first of them begins at the first op after the encoder's last block (found as
the end of a last block is) that feeds it, so the decoder's embeddings count in its first block
and the encoder's final norm in its last. Layers stay one numbering over both stacks (encoder
blocks 0..E-1, decoder blocks E..L-1) so that blocks remain intervals of the body in layer
order; the profile names them "encoder layer k" / "decoder layer k" (runtime/profile.py).

Where it runs: `ctac-opt -p assign-layers` sets the attribute, so it can be seen and edited;
`ctac compile` does not run it, because lower-to-isa calls `layers_of`, which uses the attributes
when every op that computes carries one and otherwise computes the assignment on the final IR
(after cta-compress or elsa-filter), so an attribute set before a later rewrite can never be
stale and printed IR stays as it was. Weights and constants are marked too (they emit no
instructions, and their custom printed form drops attributes, so they are not required).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import IntAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from ctac.dialects import cta
from ctac.dialects import onnx as ox

LAYER_ATTRIBUTE = "ctac.layer"
ATTENTION_OPS = (cta.AttentionOp, cta.CompressedAttentionOp)
GROUP_OPS = (cta.ClusterOp, cta.PoolOp, cta.ProjectOp)
# Ops that only re-view the residual stream: the stream value is their operand.
PASS_THROUGH = (ox.ReshapeOp, ox.FlattenOp, ox.SqueezeOp, ox.UnsqueezeOp, ox.CastOp)
# Ops that make a branch a sublayer (the FFN) rather than a rescaling of the stream.
HEAVY_OPS = (ox.MatMulOp, ox.GemmOp, ox.ConvOp, cta.ProjectOp, *ATTENTION_OPS)
DATA_OPS = (ox.WeightOp, ox.ConstantOp)


def _mask_of(op: Operation) -> SSAValue | None:
    if isinstance(op, cta.AttentionOp | cta.ClusterOp | cta.CompressedAttentionOp):
        return op.mask
    return None


def _data_operands(op: Operation) -> list[SSAValue]:
    """Operands that carry tokens (masks left out)."""
    mask = _mask_of(op)
    return [operand for operand in op.operands if mask is None or operand is not mask]


def _root(value: SSAValue) -> SSAValue:
    while isinstance(value.owner, PASS_THROUGH):
        value = value.owner.operands[0]
    return value


def _size(value: SSAValue) -> int:
    size = 1
    for dim in ox.shape_of(value):
        size *= dim
    return size


def _is_data(value: SSAValue) -> bool:
    return isinstance(value.owner, DATA_OPS)


@dataclass
class _Block:
    """One attention's block while it is being found (a decoder block: two attentions')."""

    group: list[Operation]
    first: int  # body positions of the group's first and last op
    last: int
    residual: Operation | None = None  # the Add that closes the (last) attention's skip
    stream_in: SSAValue | None = None  # r_k
    decoder: bool = False  # holds a cross-attention
    head: list[Operation] | None = None  # a decoder block's self-attention group


class _Graph:
    """Body order and def-use walks over one function."""

    def __init__(self, function: func.FuncOp) -> None:
        block = function.body.block
        self.ops = [op for op in block.ops if not isinstance(op, func.ReturnOp)]
        self.position = {op: index for index, op in enumerate(self.ops)}

    def pos(self, value: SSAValue) -> int:
        """Body position of the op defining `value` (-1 for a function argument)."""
        owner = value.owner
        return self.position[owner] if isinstance(owner, Operation) else -1

    def ancestors(self, values: Iterable[SSAValue], stop: set[Operation]) -> set[SSAValue]:
        """Every value the given values are computed from (masks included), `stop` not crossed."""
        seen: set[SSAValue] = set()
        stack = list(values)
        while stack:
            value = stack.pop()
            if value in seen:
                continue
            seen.add(value)
            owner = value.owner
            if isinstance(owner, Operation) and owner not in stop:
                stack.extend(owner.operands)
        return seen

    def descendants(self, ops: Iterable[Operation]) -> set[Operation]:
        seen: set[Operation] = set()
        stack = list(ops)
        while stack:
            op = stack.pop()
            if op in seen:
                continue
            seen.add(op)
            for result in op.results:
                stack.extend(use.operation for use in result.uses)
        return seen

    def heavy_descendants(self, value: SSAValue) -> set[Operation]:
        """Ops computed from `value` along a path through a MatMul/Gemm/Conv/cta op."""
        heavy: set[Operation] = set()
        light: set[Operation] = set()
        stack = [(use.operation, False) for use in value.uses]
        while stack:
            op, through = stack.pop()
            through = through or isinstance(op, HEAVY_OPS)
            seen = heavy if through else light
            if op in seen or isinstance(op, func.ReturnOp):
                continue
            seen.add(op)
            for result in op.results:
                stack.extend((use.operation, through) for use in result.uses)
        return heavy


def _groups(graph: _Graph) -> list[list[Operation]]:
    """Each attention with the compression ops feeding it and the recover reading it."""
    claimed: set[Operation] = set()
    groups = []
    for attention in (op for op in graph.ops if isinstance(op, ATTENTION_OPS)):
        group = [attention]
        claimed.add(attention)
        stack = [operand.owner for operand in _data_operands(attention)]
        while stack:
            owner = stack.pop()
            if isinstance(owner, GROUP_OPS) and owner not in claimed:
                claimed.add(owner)
                group.append(owner)
                stack.extend(operand.owner for operand in _data_operands(owner))
        for use in attention.results[0].uses:
            if isinstance(use.operation, cta.RecoverOp) and use.operation not in claimed:
                claimed.add(use.operation)
                group.append(use.operation)
        groups.append(group)
    return groups


def _residual(graph: _Graph, block: _Block) -> None:
    """Find the Add closing the skip around the block's attention, and the stream value r_k."""
    members = set(block.group)
    inputs = [
        operand
        for op in block.group
        for operand in _data_operands(op)
        if operand.owner not in members and not _is_data(operand)
    ]
    ancestors = graph.ancestors(inputs, members)
    ancestors |= {_root(value) for value in ancestors}
    after = (
        graph.descendants(use.operation for op in block.group for r in op.results for use in r.uses)
        - members
    )
    for op in graph.ops[block.last + 1 :]:
        if not isinstance(op, ox.AddOp) or op not in after:
            continue
        for branch, skip in (op.operands, reversed(op.operands)):
            source = _root(skip)
            if (
                (branch.owner in after or branch.owner in members)
                and source in ancestors
                and source.owner not in after
                and not _is_data(source)
                and _size(skip) == _size(op.results[0])
            ):
                block.residual, block.stream_in = op, source
                return


def _fallback_start(graph: _Graph, block: _Block, previous_end: int) -> int:
    """Without a residual: the first op after the previous group that feeds this block (a
    decoder block: its self-attention, not the encoder output its cross-attention reads)."""
    group = block.head or block.group
    members = set(group)
    inputs = [operand for op in group for operand in _data_operands(op)]
    feeding = [
        graph.pos(value)
        for value in graph.ancestors(inputs, members)
        if previous_end < graph.pos(value) < block.first and not _is_data(value)
    ]
    return min(feeding, default=block.first)


def _norm_users(value: SSAValue) -> list[SSAValue]:
    return [
        use.operation.results[0]
        for use in value.uses
        if isinstance(use.operation, ox.LayerNormalizationOp) and use.index == 0
    ]


def _last_block_end(graph: _Graph, block: _Block) -> int:
    """Body position of the last op of the last block (the FFN and, post-LN, its norm)."""
    if block.residual is None:
        return block.last
    stream = block.residual.results[0]
    end = graph.position[block.residual]
    candidates = [stream, *_norm_users(stream)]
    heavy = {value: graph.heavy_descendants(value) for value in candidates}
    for op in graph.ops[end + 1 :]:
        if not isinstance(op, ox.AddOp):
            continue
        for branch, skip in (op.operands, reversed(op.operands)):
            source = _root(skip)
            if (
                source in heavy
                and branch.owner in heavy[source]
                and _size(skip) == _size(op.results[0])
            ):
                if source is stream:
                    return graph.position[op]  # pre-LN: the next norm is the head's
                norms = _norm_users(op.results[0])  # post-LN: the block's output norm
                return graph.pos(norms[0]) if norms else graph.position[op]
    return end


def _data_ancestor_ops(value: SSAValue) -> set[Operation]:
    """The ops `value` is computed from, masks of attention and clustering ops not followed."""
    seen: set[Operation] = set()
    stack = [value]
    while stack:
        owner = stack.pop().owner
        if isinstance(owner, Operation) and owner not in seen:
            seen.add(owner)
            stack.extend(_data_operands(owner))
    return seen


def _is_cross_attention(previous: Operation, attention: Operation) -> bool:
    """`previous` feeds `attention`'s query but not its key: the keys come from another stack."""
    query, key = attention.operands[0], attention.operands[1]
    return previous in _data_ancestor_ops(query) and previous not in _data_ancestor_ops(key)


def _join_cross_attentions(blocks: list[_Block]) -> list[_Block]:
    """Each cross-attention's block merged into the block before it (see the module docstring);
    `_residual` has run on every block."""
    merged: list[_Block] = []
    for block in blocks:
        if merged and not merged[-1].decoder:
            previous = merged[-1]
            if _is_cross_attention(previous.group[0], block.group[0]):
                previous.head = list(previous.group)
                previous.group += block.group
                previous.first = min(previous.first, block.first)
                previous.last = max(previous.last, block.last)
                previous.residual = block.residual or previous.residual
                previous.decoder = True
                if previous.stream_in is None:
                    previous.stream_in = block.stream_in
                continue
        merged.append(block)
    return merged


def compute_layers(function: func.FuncOp) -> dict[Operation, int]:
    """The layer of every op of `function` (see the module docstring); {} without attention."""
    graph = _Graph(function)
    blocks = [
        _Block(group, min(map(graph.position.get, group)), max(map(graph.position.get, group)))
        for group in _groups(graph)
    ]
    if not blocks:
        return {}
    for block in blocks:
        _residual(graph, block)
    blocks = _join_cross_attentions(blocks)
    starts: list[int] = []
    previous_end = -1
    for index, block in enumerate(blocks):
        if block.decoder and index and not blocks[index - 1].decoder:
            # The decoder's first block: from the first op after the encoder's last block
            # that feeds it (its embeddings), not from its stream input.
            encoder_end = max(_last_block_end(graph, blocks[index - 1]), blocks[index - 1].last)
            start = _fallback_start(graph, block, encoder_end)
        elif block.stream_in is not None:
            start = graph.pos(block.stream_in) + 1
        else:
            start = _fallback_start(graph, block, previous_end)
        # The group is inside the block, after every earlier block and its group.
        start = min(start, block.first)
        start = max(start, previous_end + 1, starts[-1] if starts else 0)
        starts.append(start)
        previous_end = block.last
    end = max(_last_block_end(graph, blocks[-1]), blocks[-1].last)
    layers: dict[Operation, int] = {}
    layer = -1
    for index, op in enumerate(graph.ops):
        while layer + 1 < len(starts) and index >= starts[layer + 1]:
            layer += 1
        layers[op] = len(blocks) if index > end else layer
    return layers


def layers_of(function: func.FuncOp) -> dict[Operation, int]:
    """Layers as the `ctac.layer` attributes say when every op that computes has one (weights
    and constants emit no instructions, and their printed form drops attributes), else computed
    from the structure."""
    marked = {}
    for op in function.body.block.ops:
        attr = op.attributes.get(LAYER_ATTRIBUTE)
        if isinstance(attr, IntAttr):
            marked[op] = attr.data
        elif not isinstance(op, func.ReturnOp | ox.WeightOp | ox.ConstantOp):
            return compute_layers(function)
    return marked


def assign_layers(module: ModuleOp) -> None:
    """Set `ctac.layer` on every op of every function (removing stale ones where there is none)."""
    for function in module.ops:
        if not isinstance(function, func.FuncOp):
            continue
        layers = compute_layers(function)
        for op in function.body.block.ops:
            if op in layers:
                op.attributes[LAYER_ATTRIBUTE] = IntAttr(layers[op])
            else:
                op.attributes.pop(LAYER_ATTRIBUTE, None)


@dataclass(frozen=True)
class AssignLayersPass(ModulePass):
    """Mark every op with the transformer block it belongs to (`ctac.layer`)."""

    name = "assign-layers"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        assign_layers(op)
