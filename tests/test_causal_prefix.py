"""Causal CTA decided per tile of keys: under the block-causal scheme a key block's clusters serve
only the queries of later blocks, so a causal attention clusters a prefix of its key blocks
(cta-compress `compressed-blocks`; never the last block, whose clusters no query sees) and the
cost-aware policy (ctac/policy.py) picks the prefix per layer from the cost model. The key tiles
over an earlier block are charged the clusters that block formed, not the block's size."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import FP32_HW, MODELS
from xdsl.utils.exceptions import VerifyException

from ctac.errors import CtacError
from ctac.hw import load_hardware
from ctac.importer import import_model
from ctac.passes.cta_compress import causal_prefix, cta_compress
from ctac.pipeline import run_passes
from ctac.policy import CAUSAL_BLOCK_SIZES as CAUSAL_BLOCKS
from ctac.policy import decide, expected_clusters, policy_options, prefix_candidates
from ctac.runtime import compression
from ctac.runtime.costmodel import effective_fields, simulate
from ctac.runtime.evaluator import evaluate
from ctac.runtime.reference_cta import attention

HW = load_hardware()
SPEC = "cta-compress{tau-q=0.5 tau-kv=0.3 hash-bits=4 window=8 block=%d%s}"  # the CLI defaults


def gpt2_long(length: int):
    shapes = {"input_ids": [1, length], "attention_mask": [1, length]}
    module = import_model(MODELS / "gpt2_long.onnx", shapes).module
    run_passes(module, "onnx-canonicalize,detect-attention")
    return module


def test_queries_past_the_prefix_see_its_clusters_then_raw_keys() -> None:
    clusters, raw = compression.causal_visibility(12, 12, 4, None, compressed=4)
    assert clusters.shape == (12, 4) and raw.shape == (12, 12)
    # Block 0 (p = 0..3): raw keys up to itself; blocks 1 and 2: block 0's clusters, raw from 4.
    assert clusters.sum(1).tolist() == [0] * 4 + [4] * 8
    assert raw.sum(1).tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8]
    assert raw[9].nonzero()[0].tolist() == [4, 5, 6, 7, 8, 9]


def test_the_last_blocks_clusters_are_never_seen_and_a_prefix_at_threshold_zero_is_exact() -> None:
    rng = np.random.default_rng(3)
    k = np.repeat(rng.standard_normal((1, 2, 8, 4)), 3, axis=2)  # 24 keys, each thrice
    v = rng.standard_normal(k.shape)
    q = rng.standard_normal(k.shape)

    def compressed(tau: float, prefix: int) -> np.ndarray:
        keys = compression.cluster(k[:, :, :prefix], tau=tau, hash_bits=4, block=6)
        values = compression.pool(v[:, :, :prefix], keys.ids)
        return compression.compressed_attention(
            q, keys.centroids, values, keys.counts, k, v,
            num_heads=2, kv_heads=2, scale=0.5, causal=True, block=6,
        )  # fmt: skip

    # 4 blocks of 6: clustering all of them or all but the last gives the same output.
    assert np.abs(compressed(0.8, 24) - compressed(0.8, 18)).max() <= 1e-12  # float sums only
    assert not np.allclose(compressed(0.8, 18), compressed(0.8, 6))  # a shorter prefix differs
    exact = attention(
        q, k, v, None, num_heads=2, kv_heads=2, scale=0.5, causal=True, mask_kind="none"
    )
    for prefix in (6, 12, 18):
        assert np.abs(compressed(0.0, prefix) - exact).max() <= 1e-9


def test_causal_prefix_never_clusters_the_last_block() -> None:
    assert causal_prefix(256, 64) == 192  # default: all but the last
    assert causal_prefix(256, 64, 1) == 64
    assert causal_prefix(256, 64, 9) == 192
    assert causal_prefix(250, 64) == 192  # a partial last block
    assert causal_prefix(64, 64) == 64  # one block: nothing before it to compress
    assert prefix_candidates(1) == [] and prefix_candidates(4) == [1, 2, 3]
    assert prefix_candidates(32) == [1, 7, 13, 19, 25, 31]


def run_prefix(blocks: int, length: int = 256) -> dict:
    """gpt2_long at `length` tokens, causal CTA clustering its first `blocks` key blocks of 64
    (0: the default): the reference output, the fp32 machine's, the program and its profile."""
    from ctac.emit import program_from_module
    from ctac.passes.lower_to_isa import lower_module
    from ctac.runtime.interpreter import run_program

    module = gpt2_long(length)
    extra = f" compressed-blocks={blocks},{blocks}" if blocks else ""
    run_passes(module, SPEC % (64, extra))
    module.verify()
    rng = np.random.default_rng(0)
    inputs = {
        "input_ids": rng.integers(0, 24, (1, length)).astype(np.int64),  # many repeats
        "attention_mask": np.ones((1, length), dtype=np.int64),
    }
    expected = next(iter(evaluate(module, inputs).values()))
    program = program_from_module(lower_module(copy.deepcopy(module), FP32_HW))
    outputs, stats = run_program(program, {b.index: b.capacity for b in FP32_HW.buffers}, inputs)
    return {
        "expected": expected,
        "got": next(iter(outputs.values())),
        "program": program,
        "stats": stats,
    }


@pytest.mark.parametrize("blocks", [1, 0])
def test_prefix_programs_match_their_reference_and_hash_only_the_prefix(blocks: int) -> None:
    run = run_prefix(blocks)
    assert np.abs(run["got"] - run["expected"]).max() <= 1e-4
    hashed = sum(f["rows"] for name, f in run["program"].instructions if name == "HASH")
    prefix = 64 if blocks else 192  # the default leaves the last of 4 blocks raw
    assert hashed == prefix * 2 * 2  # 2 heads, 2 layers


def test_key_tiles_over_a_block_are_charged_the_clusters_it_formed() -> None:
    run = run_prefix(0)
    program, formed = run["program"], run["stats"].clusters
    effective, _ = effective_fields(program, formed)
    readouts = {i for i, (name, _) in enumerate(program.instructions) if name == "CLUSTER_READ"}
    charged = [
        (effective[index][field], formed[source])
        for index, field, source, *_ in program.dynamic
        if source in readouts
        and program.instructions[index][0] == "GEMM"
        and program.sources[index].startswith("cta.compressed_attention")
    ]
    assert charged, "no compressed-attention GEMM is sized by a block's clusters"
    assert all(size == min(64, clusters) for size, clusters in charged)
    assert min(size for size, _ in charged) < 64  # the repeated tokens merged
    # Timing only: fewer expected clusters, fewer cycles in the compressed attention.
    cycles = {
        ratio: sum(
            t.occupied
            for t in simulate(program, HW, expected_clusters(program, ratio)).timings
            if t.source.startswith("cta.compressed_attention")
        )
        for ratio in (1.0, 0.25)
    }
    assert cycles[0.25] < 0.8 * cycles[1.0]


def test_the_policy_picks_each_causal_layers_prefix() -> None:
    """gpt2_long at 2048 tokens in blocks of 256: at 0.7 clusters per token clustering the 7th
    block costs at least what its clusters save the 256 queries after it (layer 0: 1,452 cycles
    more; layer 1: a tie, which goes to less clustering), so each layer compresses 6 of its 8
    blocks; with no merging (1.0) compression does not pay and both stay exact."""
    module = gpt2_long(2048)
    merged = decide(module, SPEC % (256, ""), HW, cluster_ratio=0.7)
    assert [(d.compress, d.compressed_blocks, d.key_blocks) for d in merged] == [(True, 6, 8)] * 2
    assert all(d.cta_cycles < d.exact_cycles for d in merged)
    assert "first 6 of 8 key blocks clustered (tried 1:" in merged[0].reason
    assert policy_options(merged) == "compressed-blocks=6,6"
    none = decide(module, SPEC % (256, ""), HW, cluster_ratio=1.0)
    assert not any(d.compress for d in none)
    assert policy_options(none).startswith("keep-exact=0,1")
    # The chosen program: never slower than exact at the ratio it was chosen for.
    exact = gpt2_long(2048)
    chosen = gpt2_long(2048)
    run_passes(chosen, SPEC % (256, " " + policy_options(merged)))
    from ctac.emit import compile_module

    exact_cycles = simulate(compile_module(exact, HW), HW).cycles
    program = compile_module(chosen, HW)
    assert simulate(program, HW, expected_clusters(program, 0.7)).cycles < exact_cycles


def test_bad_prefixes_are_refused() -> None:
    with pytest.raises(CtacError, match="compressed-blocks must be >= 0"):
        cta_compress(gpt2_long(128), compressed_blocks=(-1, 0))
    module = gpt2_long(256)
    run_passes(module, SPEC % (64, ""))
    text = str(module).replace("tensor<1x2x192x", "tensor<1x2x100x")
    from ctac.pipeline import parse_module

    with pytest.raises((VerifyException, CtacError), match="prefix of whole blocks"):
        parse_module(text).verify()


def test_the_policy_sizes_each_causal_layers_key_blocks() -> None:
    """Small blocks keep few raw keys per query but make each earlier block a key tile of its
    own; at 2048 tokens and 0.1 clusters per token, blocks of 256 are the cheapest of 64-512
    (the tiles of 64-position blocks hold ~7 cluster rows: a fifth of the PE array's width)."""
    module = gpt2_long(2048)
    heard: list[str] = []
    decisions = decide(
        module, SPEC % (64, ""), HW, cluster_ratio=0.1, block_sizes=CAUSAL_BLOCKS,
        progress=heard.append,
    )  # fmt: skip
    # Each form compiled once: exact, 4 sizes, then 6 more prefixes of the 8 blocks of 256.
    assert heard[0] == "exact" and len(heard) == len(set(heard)) == 1 + 4 + 6
    assert "causal-block=256,256 compressed-blocks=1,1" in heard
    assert [(d.compress, d.block_size, d.compressed_blocks) for d in decisions] == [
        (True, 256, 7)
    ] * 2
    assert "key blocks of 256 (tried 64: " in decisions[0].reason
    assert policy_options(decisions) == "compressed-blocks=7,7 causal-block=256,256"
    small = decide(module, SPEC % (64, ""), HW, cluster_ratio=0.1, block_sizes=(64,))
    assert all(d.cta_cycles < 0.8 * s.cta_cycles for d, s in zip(decisions, small, strict=True))


def test_the_policy_compiles_no_block_size_that_leaves_one_block() -> None:
    """At 256 tokens, blocks of 256 or 512 leave each causal layer one block (nothing before
    it to cluster): the policy reads that from the compressed module and compiles neither."""
    heard: list[str] = []
    decisions = decide(
        gpt2_long(256), SPEC % (64, ""), HW, cluster_ratio=0.1, block_sizes=CAUSAL_BLOCKS,
        progress=heard.append,
    )  # fmt: skip
    assert not [form for form in heard if "causal-block=256" in form or "causal-block=512" in form]
    assert heard[:3] == ["exact", "causal-block=64,64", "causal-block=128,128"]
    assert all(d.block_size in (64, 128) for d in decisions)
    assert "(tried 64: " in decisions[0].reason and "256: " not in decisions[0].reason


def test_cta_block_given_is_kept_and_checked(tmp_path, capsys) -> None:
    from ctac.cli import main
    from ctac.runtime.program import read_program

    model, shape = str(MODELS / "gpt2_long.onnx"), "input_ids=1x1024,attention_mask=1x1024"
    flags = ["--attention", "cta", "--cluster-ratio", "0.1"]
    out = tmp_path / "g.ctab"
    assert main(["compile", model, "--shape", shape, *flags, "-o", str(out)]) == 0
    chosen = capsys.readouterr().err
    assert chosen.count("key blocks of ") == 2  # the policy sized them
    assert main(["compile", model, "--shape", shape, *flags, "--cta-block", "128",
                 "-o", str(out)]) == 0  # fmt: skip
    given = capsys.readouterr().err
    assert "key blocks of " not in given and given.count("key blocks clustered") == 2
    hashed = sum(f["rows"] for name, f in read_program(out).instructions if name == "HASH")
    assert hashed % 128 == 0
    assert main(["compile", model, "--shape", shape, *flags, "--cta-block", "0"]) == 2
    assert "error: --cta-block 0 is out of range" in capsys.readouterr().err
