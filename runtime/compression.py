"""CTA token compression: the clustering algorithms and the numpy meaning of the compression ops.

The ops (dialects/cta.py) and their semantics (runtime/reference.py) call into this module, so
the evaluator, the accuracy harness and the tests share one implementation.

Shapes stay static while cluster counts are data dependent: a clustering of n tokens returns a
table of n rows in which only m rows are used (`counts > 0`; unused rows are zero), and every
token's row index (`ids`). The leading dims (...) are independent sequences: one clustering per
sequence (layer input X) or per (sequence, head) after projection.

Clustering (`cluster`): tokens are split into groups that never merge with each other:
(sequence, block, validity, hash bucket). Inside a group, tokens are taken in position order and
each one joins the nearest running centroid c of its group when ||x - c|| <= tau * ||c||, or
opens a new cluster (greedy "leader" clustering). Methods:
- `hash-leader` (default): the bucket is the sign pattern of `hash_bits` random projections
  (seeded), so a token is compared with the clusters of its bucket only;
- `leader`: no hashing (one bucket), every token is compared with every cluster of its group;
- `hash-spread` / `spread`: the same two, but the threshold is tau times the spread of the
  token's sequence (root mean square distance of its valid tokens to their mean; per block when
  blocked) instead of the centroid's norm, and hashing uses tokens minus that mean. A common
  offset (a projection bias, which softmax ignores for keys) then neither loosens the test nor
  puts every token into the same few buckets, and large-norm outliers get no larger tolerance
  than the rest.
The threshold is never below `MIN_RELATIVE_DISTANCE` (1e-6) so that exactly repeated tokens merge
even when the running mean of c equal vectors is off by a rounding error.

Counts are float32 and count only valid (unmasked) tokens: a padding token never merges with a
real one, and the rows of padding-only clusters have count 0, so they never receive attention
weight. Rows are ordered by the position of each cluster's first token; with `block = B > 0`
clusters never span blocks of B positions and block c's clusters occupy rows [c*B, c*B + B), which
is what lets causal attention tell from a row index which positions it stands for.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ctac.dialects.cta import CLUSTER_METHODS as METHODS
from ctac.dialects.cta import MAX_HASH_BITS

MIN_RELATIVE_DISTANCE = 1e-6

Array = np.ndarray


@dataclass
class Clustering:
    """The result of `cluster`: padded tables plus what the cost model needs."""

    centroids: Array  # (..., n, d), rows >= m zero
    counts: Array  # (..., n) float32, valid members per row (0 = unused or padding-only)
    ids: Array  # (..., n) int64, each token's row
    comparisons: int = 0  # token-to-centroid distance computations of the leader step
    hashed: int = 0  # tokens hashed (each costs hash_bits * d multiply-adds)


@dataclass
class ClusterRecord:
    """One `cluster` call seen by `recording()` (the accuracy harness reads these)."""

    label: str
    shape: tuple[int, ...]
    clusters: Array  # (...,) used rows with valid members, per sequence
    valid_tokens: Array  # (...,) valid tokens per sequence
    comparisons: int
    hashed: int
    hash_bits: int


@dataclass
class _Recorder:
    records: list[ClusterRecord] = field(default_factory=list)


_RECORDERS: list[_Recorder] = []


@contextmanager
def recording() -> Iterator[list[ClusterRecord]]:
    """Collect a `ClusterRecord` for every `cluster` call made inside the block."""
    recorder = _Recorder()
    _RECORDERS.append(recorder)
    try:
        yield recorder.records
    finally:
        _RECORDERS.remove(recorder)


def hash_planes(dim: int, bits: int, seed: int) -> Array:
    """The (dim, bits) Gaussian projections of sign-random-projection hashing."""
    return np.random.default_rng(seed).standard_normal((dim, bits))


def hash_codes(x: Array, bits: int, seed: int) -> Array:
    """Bucket of each row of x (..., d): the sign bits of `bits` random projections as an int."""
    if bits <= 0:
        return np.zeros(x.shape[:-1], dtype=np.int64)
    signs = (x @ hash_planes(x.shape[-1], bits, seed)) > 0
    return (signs.astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(axis=-1)


def _broadcast_valid(valid: Array | None, lead: tuple[int, ...], n: int) -> Array:
    """A validity mask of shape lead + (n,): given as lead + (n,) or (lead[0], n)."""
    if valid is None:
        return np.ones((*lead, n), dtype=bool)
    valid = np.asarray(valid) != 0
    if valid.shape != (*lead, n):
        if valid.ndim != 2 or not lead or valid.shape != (lead[0], n):
            raise ValueError(
                f"mask shape {valid.shape} fits neither {(*lead, n)} nor {(lead[0], n)}"
            )
        valid = valid.reshape((lead[0],) + (1,) * (len(lead) - 1) + (n,))
    return np.broadcast_to(valid, (*lead, n))


def nearest_passing(
    distance: Array, allowed: Array, existing: Array, first_pair: Array
) -> tuple[Array, Array]:
    """For tokens compared with `existing[t]` candidate rows each (their squared distances laid
    out token after token, token t's from `first_pair[t]`): the tokens with a candidate within
    `allowed`, and for each the position of its nearest such candidate (the first on a tie).
    Shared by the reference and the cluster unit's model so both round and tie-break alike."""
    pairs = len(distance)
    distance = np.where(distance <= allowed, distance, np.inf)
    has = existing > 0
    heads = first_pair[has]
    nearest = np.minimum.reduceat(distance, heads)
    is_best = np.isfinite(distance) & (distance == np.repeat(nearest, existing[has]))
    index = np.where(is_best, np.arange(pairs), pairs)
    best = np.minimum.reduceat(index, heads)
    found = best < pairs
    return np.flatnonzero(has)[found], best[found]


def _leader_pass(
    xs: Array,
    starts: Array,
    sizes: Array,
    threshold: float,
    spread: Array | None = None,
    window: int = 0,
) -> tuple[Array, int]:
    """Greedy leader clustering of tokens sorted by group (xs: (N, d)); groups are independent.

    Step k takes the k-th token of every group that has one, so the loop runs max(sizes) times and
    each step is vectorised over groups: the (token, cluster) pairs of all active groups are laid
    out flat, so the work is the number of comparisons, not groups x the widest group.
    A group's j-th cluster lives in slot starts[g] + j and keeps its running mean.
    With `spread` (one scale per token, the same inside a group) the test is
    ||x - c|| <= threshold * spread instead of threshold * ||c||.
    With `window` > 0 a token is compared only with the `window` clusters its group opened last
    (the older ones are closed: never compared or updated again).
    Returns each token's slot and the number of distance computations."""
    total, dim = xs.shape
    means = np.zeros((total, dim), dtype=np.float64)
    norms = np.zeros(total, dtype=np.float64)  # squared norms of the means
    member_counts = np.zeros(total, dtype=np.int64)
    leaders = np.zeros(len(starts), dtype=np.int64)
    slots = np.empty(total, dtype=np.int64)
    limit = max(threshold, MIN_RELATIVE_DISTANCE) ** 2
    comparisons = 0
    order = np.argsort(-sizes, kind="stable")
    sorted_sizes = sizes[order]
    for k in range(int(sizes.max(initial=0))):
        groups = order[: int(np.searchsorted(-sorted_sizes, -k, side="left"))]
        tokens = starts[groups] + k
        x = xs[tokens]
        existing = leaders[groups]
        # The open clusters: the last `window` a group opened (all of them without a window).
        compared = np.minimum(existing, window) if window > 0 else existing
        closed = existing - compared
        pairs = int(compared.sum())
        join = np.zeros(len(groups), dtype=bool)
        chosen = np.zeros(len(groups), dtype=np.int64)
        if pairs:
            owner = np.repeat(np.arange(len(groups)), compared)
            first_pair = np.cumsum(compared) - compared
            candidates = (
                starts[groups][owner] + closed[owner] + np.arange(pairs) - first_pair[owner]
            )
            distance = ((means[candidates] - x[owner]) ** 2).sum(axis=-1)
            norm = norms[candidates]
            if spread is None:
                allowed = limit * norm
            else:
                floor = MIN_RELATIVE_DISTANCE**2 * norm
                allowed = np.maximum(threshold**2 * spread[tokens][owner] ** 2, floor)
            rows, picked = nearest_passing(distance, allowed, compared, first_pair)
            join[rows] = True
            chosen[rows] = candidates[picked]
            comparisons += pairs
        opened = starts[groups] + existing
        slot = np.where(join, chosen, opened)
        leaders[groups[~join]] += 1
        member_counts[slot] += 1
        means[slot] += (x - means[slot]) / member_counts[slot][:, None]
        norms[slot] = (means[slot] ** 2).sum(axis=-1)
        slots[tokens] = slot
    return slots, comparisons


def _unit_statistics(x: Array, ok: Array, unit: Array, units: int) -> tuple[Array, Array]:
    """Per token: the mean of its unit's valid tokens (all tokens if none is valid) and the
    unit's spread, the root mean square distance of those tokens to that mean."""
    use = np.where(np.bincount(unit, weights=ok, minlength=units)[unit] > 0, ok, True)
    weight = use.astype(np.float64)
    count = np.maximum(np.bincount(unit, weights=weight, minlength=units), 1.0)
    sums = np.zeros((units, x.shape[1]))
    np.add.at(sums, unit, x * weight[:, None])
    center = (sums / count[:, None])[unit]
    squares = np.bincount(unit, weights=((x - center) ** 2).sum(axis=1) * weight, minlength=units)
    spread = np.sqrt(squares / count)[unit]
    return center, spread


def _cap_clusters(x: Array, labels: Array, unit: Array, valid: Array, max_clusters: int) -> Array:
    """Per unit (sequence or block), keep the `max_clusters` largest valid clusters (ties: first
    opened) and move the members of the others to the nearest kept centroid."""
    labels = labels.copy()
    for u in np.unique(unit[valid]):
        members = np.flatnonzero((unit == u) & valid)
        clusters, first, sizes = np.unique(labels[members], return_index=True, return_counts=True)
        if len(clusters) <= max_clusters:
            continue
        rank = np.lexsort((members[first], -sizes))
        kept = clusters[rank[:max_clusters]]
        centroids = np.stack([x[members[labels[members] == c]].mean(axis=0) for c in kept])
        moved = members[~np.isin(labels[members], kept)]
        distance = ((x[moved][:, None, :] - centroids[None]) ** 2).sum(axis=-1)
        labels[moved] = kept[np.argmin(distance, axis=1)]
    return labels


def cluster(
    tokens: Array,
    valid: Array | None = None,
    *,
    method: str = "hash-leader",
    tau: float = 0.0,
    hash_bits: int = 8,
    seed: int = 0,
    max_clusters: int = 0,
    block: int = 0,
    window: int = 0,
    label: str = "",
    alone: Array | None = None,
) -> Clustering:
    """Cluster the rows of tokens (..., n, d), each leading index an independent sequence.

    `valid` (lead + (n,) or (lead[0], n), nonzero = real token) keeps padding apart and out of the
    counts; `block` > 0 clusters each block of positions on its own (causal attention);
    `max_clusters` > 0 caps the valid clusters of each sequence (or block); `window` > 0 compares
    each token only with the `window` clusters its group opened last. `alone` (shaped like
    `valid`, nonzero = alone) gives a token a hash code no other token has, so it forms a cluster
    of its own (the keys `keep_top` keeps exact); the rest cluster as without it."""
    if method not in METHODS:
        raise ValueError(f"unknown clustering method '{method}' (known: {', '.join(METHODS)})")
    if not 0 <= hash_bits <= MAX_HASH_BITS:
        raise ValueError(f"hash_bits must be in [0, {MAX_HASH_BITS}], got {hash_bits}")
    if tau < 0 or not math.isfinite(tau):
        raise ValueError(f"tau must be a finite number >= 0, got {tau}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    tokens = np.asarray(tokens)
    *lead_list, n, dim = tokens.shape
    lead = tuple(lead_list)
    sequences = int(np.prod(lead, dtype=np.int64))
    x = tokens.reshape(sequences * n, dim).astype(np.float64)
    ok = _broadcast_valid(valid, lead, n).reshape(sequences * n)
    position = np.tile(np.arange(n), sequences)
    sequence = np.repeat(np.arange(sequences), n)
    block_of = position // block if block > 0 else np.zeros_like(position)
    blocks = -(-n // block) if block > 0 else 1
    unit = sequence * blocks + block_of
    bits = hash_bits if method.startswith("hash-") else 0
    single = (
        _broadcast_valid(alone, lead, n).reshape(sequences * n)
        if alone is not None
        else np.zeros(len(x), dtype=bool)
    )
    spread = None
    hashed_x = x
    if method.endswith("spread"):
        # Over the tokens being clustered: ones kept alone do not widen the others' threshold.
        center, spread = _unit_statistics(x, ok & ~single, unit, sequences * blocks)
        hashed_x = x - center
    codes = hash_codes(hashed_x, bits, seed) if bits else np.zeros(len(x), dtype=np.int64)
    if alone is not None:
        # Codes >= 2^bits no hashed token has, one per position: a group of its own. (The
        # accelerator uses 2^bits * rank instead; any unique code gives the same partition.)
        codes = np.where(single, (1 << bits) + position, codes)
    # Groups never merge: (unit, validity, bucket); inside a group, position order.
    order = np.lexsort((position, codes, ~ok, unit))
    keys = np.stack([unit[order], ok[order], codes[order]], axis=1)
    boundary = np.ones(len(order), dtype=bool)
    boundary[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    starts = np.flatnonzero(boundary)
    sizes = np.diff(np.append(starts, len(order)))
    slots, comparisons = _leader_pass(
        x[order], starts, sizes, tau, None if spread is None else spread[order], window
    )
    # A cluster is named by its first token (flat index): the smallest member of its slot. (The
    # slot number itself is not: slot j of a group is its j-th cluster, whose first token comes
    # after the group's j-th token whenever an earlier token joined instead of opening.)
    first = np.full(len(order), len(order), dtype=np.int64)
    np.minimum.at(first, slots, order)
    labels = np.empty(len(order), dtype=np.int64)
    labels[order] = first[slots]
    if max_clusters > 0:
        labels = _cap_clusters(x, labels, unit, ok, max_clusters)
    # Rows: clusters of a unit ordered by their first token, placed from the unit's first row.
    names, index = np.unique(labels, return_inverse=True)  # names sorted = by first token
    name_unit = unit[names]
    first_of_unit = np.searchsorted(name_unit, name_unit, side="left")
    row_in_unit = np.arange(len(names)) - first_of_unit
    base = block_of[names] * block if block > 0 else 0
    rows = row_in_unit + base
    ids = rows[index]
    table = np.zeros((sequences, n, dim), dtype=np.float64)
    counts_all = np.zeros((sequences, n), dtype=np.float64)
    np.add.at(table, (sequence, ids), x)
    np.add.at(counts_all, (sequence, ids), 1.0)
    table /= np.maximum(counts_all, 1.0)[..., None]
    counts = np.zeros((sequences, n), dtype=np.float64)
    np.add.at(counts, (sequence, ids), ok.astype(np.float64))
    result = Clustering(
        centroids=table.reshape(tokens.shape).astype(tokens.dtype),
        counts=counts.reshape((*lead, n)).astype(np.float32),
        ids=ids.reshape((*lead, n)).astype(np.int64),
        comparisons=comparisons,
        hashed=len(x) if bits else 0,
    )
    for recorder in _RECORDERS:
        recorder.records.append(
            ClusterRecord(
                label=label,
                shape=tuple(tokens.shape),
                clusters=(result.counts > 0).sum(axis=-1),
                valid_tokens=ok.reshape((*lead, n)).sum(axis=-1),
                comparisons=comparisons,
                hashed=result.hashed,
                hash_bits=bits,
            )
        )
    return result


# ---------------------------------------------------------------------------------------------
# The other ops
# ---------------------------------------------------------------------------------------------


def keep_top(q: Array, k: Array, keep: int, mask: Array | None = None) -> Array:
    """Per (sequence, head): rank 1..keep of the valid keys with the largest qbar . k_j (qbar the
    mean of the valid queries, a proxy monotone in the attention mass a typical query gives key
    j), 0 for the rest; ties go to the earliest position. q (B, H, nq, d), k (B, H, n, d), mask
    (B, n) key padding (also the queries' when nq == n). Result (B, H, n) int64."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    b, heads, n, _ = k.shape
    key_ok = np.ones((b, n), dtype=bool) if mask is None else np.asarray(mask) != 0
    query_ok = (
        key_ok
        if mask is not None and q.shape[2] == n
        else np.ones(q.shape[:1] + q.shape[2:3], bool)
    )
    weight = query_ok.astype(np.float64)
    count = weight.sum(axis=-1)
    # No valid query: qbar = 0, every score ties and the earliest valid keys are kept.
    qbar = np.einsum("bq,bhqd->bhd", weight, q) / np.maximum(count, 1.0)[:, None, None]
    scores = np.einsum("bhd,bhnd->bhn", qbar, k)
    scores = np.where(key_ok[:, None, :], scores, -np.inf)
    # Stable sort of -score: equal scores keep position order.
    order = np.argsort(-scores, axis=-1, kind="stable")
    rank = np.zeros((b, heads, n), dtype=np.int64)
    top = order[..., :keep]
    chosen = np.take_along_axis(key_ok[:, None, :].repeat(heads, axis=1), top, axis=-1)
    np.put_along_axis(rank, top, np.where(chosen, np.arange(1, top.shape[-1] + 1), 0), axis=-1)
    return rank


def _per_row_ids(ids: Array, lead: tuple[int, ...]) -> Array:
    """ids given as lead + (n,) or (lead[0], n), broadcast to lead + (n,)."""
    ids = np.asarray(ids)
    if ids.shape[:-1] == lead:
        return ids
    if ids.ndim == 2 and lead and ids.shape[0] == lead[0]:
        shape = (lead[0],) + (1,) * (len(lead) - 1) + (ids.shape[-1],)
        return np.broadcast_to(ids.reshape(shape), (*lead, ids.shape[-1]))
    raise ValueError(f"ids shape {ids.shape} does not fit rows with leading dims {lead}")


def recover(rows: Array, ids: Array) -> Array:
    """Every token receives its cluster's row: out[..., i, :] = rows[..., ids[..., i], :]."""
    rows = np.asarray(rows)
    full = _per_row_ids(ids, rows.shape[:-2])
    return np.take_along_axis(rows, full[..., None].astype(np.int64), axis=-2)


def pool(tokens: Array, ids: Array) -> Array:
    """Mean of the tokens (..., n, d) of each cluster given by ids; rows nobody uses are zero.
    (V follows K: values are averaged over the clusters of the keys.) Tokens (B, n, d) with
    per-head ids (B, H, n) are shared by the heads: one (B, H, n, d) table per (batch, head)."""
    tokens = np.asarray(tokens)
    ids = np.asarray(ids)
    if tokens.ndim == 3 and ids.ndim == 3 and ids.shape[::2] == tokens.shape[:2]:
        tokens = np.broadcast_to(tokens[:, None], (ids.shape[0], ids.shape[1], *tokens.shape[1:]))
    lead, n, dim = tokens.shape[:-2], tokens.shape[-2], tokens.shape[-1]
    full = _per_row_ids(ids, lead).reshape(-1, n)
    flat = tokens.reshape(-1, n, dim).astype(np.float64)
    sequence = np.repeat(np.arange(flat.shape[0]), n)
    sums = np.zeros_like(flat)
    counts = np.zeros(flat.shape[:2])
    np.add.at(sums, (sequence, full.reshape(-1)), flat.reshape(-1, dim))
    np.add.at(counts, (sequence, full.reshape(-1)), 1.0)
    return (sums / np.maximum(counts, 1.0)[..., None]).reshape(tokens.shape)


def _repeat_heads(array: Array, group: int) -> Array:
    return np.repeat(array, group, axis=1) if group > 1 else array


def _scores(q: Array, k: Array, scale: float, softcap: float) -> Array:
    scores = np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2)) * scale
    if softcap > 0:
        scores = softcap * np.tanh(scores / softcap)
    return scores


def causal_visibility(
    q_len: int,
    kv_len: int,
    block: int,
    causal_offset: int | None,
    compressed: int | None = None,
) -> tuple[Array, Array]:
    """(cluster rows, raw keys) visible to each query under the block-causal scheme: cluster
    rows over the table's `compressed` rows (default kv_len), raw keys over all kv_len.

    Query i stands at key position p = i + offset (offset defaults to kv_len - q_len). With
    b = min(p, kv_len - 1) // block, limited to the table's compressed blocks, it sees the
    cluster rows of blocks before b (all their members are at positions < b * block <= p) and
    the raw keys b * block <= j <= p. A query with p < 0 sees nothing. block <= 0 means one
    block: plain exact causal attention."""
    offset = kv_len - q_len if causal_offset is None else causal_offset
    compressed = kv_len if compressed is None else compressed
    width = block if block > 0 else max(kv_len, 1)
    position = np.arange(q_len) + offset
    current = np.minimum(np.maximum(position, 0), kv_len - 1) // width
    current = np.minimum(current, -(-compressed // width))  # blocks past the table stay raw
    seen = position[:, None] >= 0
    rows = np.arange(compressed)
    clusters = seen & ((rows // width)[None, :] < current[:, None])
    key = np.arange(kv_len)
    raw = seen & (key[None, :] >= current[:, None] * width) & (key[None, :] <= position[:, None])
    return clusters, raw


def compressed_attention(
    q: Array,
    k: Array,
    v: Array,
    counts: Array,
    key_tokens: Array | None = None,
    value_tokens: Array | None = None,
    mask: Array | None = None,
    *,
    num_heads: int,
    kv_heads: int,
    scale: float,
    softcap: float = 0.0,
    causal: bool = False,
    causal_offset: int | None = None,
    block: int = 0,
) -> Array:
    """Attention of query rows over key/value centroids, each weighted by its count.

    softmax_j(q_r . k_j * scale + log c_j) v_j: a centroid standing for c_j equal keys gets the
    weight those keys had together; c_j = 0 (unused or padding rows) gets none. Causal: q holds
    one row per query token and the block-causal scheme of `causal_visibility` applies, the raw
    keys/values (key_tokens, value_tokens, with the key_padding `mask`) serving the query's own
    block exactly (and every block past a table of fewer rows than keys, a compressed prefix).
    A row that sees nothing gives zeros."""
    group = num_heads // kv_heads
    k, v = _repeat_heads(k, group), _repeat_heads(v, group)
    weights = np.asarray(counts, dtype=np.float64)
    weights = weights[:, None, :] if weights.ndim == 2 else _repeat_heads(weights, group)
    with np.errstate(divide="ignore"):
        log_weights = np.where(weights > 0, np.log(np.maximum(weights, 1e-300)), -np.inf)
    scores = _scores(q, k, scale, softcap) + log_weights[:, :, None, :]
    values = v.astype(np.float64)
    if causal:
        if key_tokens is None or value_tokens is None:
            raise ValueError("causal compressed attention needs the raw key and value tokens")
        clusters, raw = causal_visibility(
            q.shape[2], key_tokens.shape[2], block, causal_offset, compressed=k.shape[2]
        )
        raw_scores = _scores(q, _repeat_heads(key_tokens, group), scale, softcap)
        raw_visible = raw[None, None]
        if mask is not None:
            raw_visible = raw_visible & (np.asarray(mask) != 0)[:, None, None, :]
        scores = np.concatenate(
            [
                np.where(clusters[None, None], scores, -np.inf),
                np.where(raw_visible, raw_scores, -np.inf),
            ],
            axis=-1,
        )
        values = np.concatenate(
            [values, _repeat_heads(value_tokens, group).astype(np.float64)], axis=-2
        )
    peak = np.max(scores, axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    exps = np.exp(scores - peak)
    total = exps.sum(axis=-1, keepdims=True)
    probabilities = np.divide(exps, total, out=np.zeros_like(exps), where=total > 0)
    return np.matmul(probabilities, values)
