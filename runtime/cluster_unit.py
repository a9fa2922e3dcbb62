"""The cluster unit's centroid table: leader clustering that continues chunk after chunk.

CLUSTER (runtime/isa.py) clusters one chunk of tokens against the table the earlier chunks of the
same sequence (or causal block) built; CLUSTER_READ reads rows of the finished table. The table
holds, per row (a cluster), its running mean, the squared norm of that mean, its member count and
its group key: the token's hash code, or -1 - code for padding (padding never meets a real token).
Rows are numbered in the order their clusters opened, i.e. by each cluster's first token: the
numbering of `runtime.compression.cluster`, whose decisions this model repeats operation for
operation (same float64 arithmetic, same tie break), so a sequence cut into chunks forms the same
clusters as one call of the reference:

- tokens are taken in position order; a token is compared with every row of its group and joins
  the nearest one passing ||x - c||^2 <= max(tau, 1e-6)^2 ||c||^2, else it opens a row;
- within a chunk, step k takes the k-th token of every group at once (groups are independent), as
  the reference does; new rows get provisional slots and are renumbered by first token at the end
  of the chunk, so rows stay in first-token order across groups;
- a group with many tokens in the chunk goes on its own, token by token, and (without a window)
  searches its rows through an index that rules out rows which cannot pass (_GroupIndex), so a
  chunk of 65,535 distinct tokens costs near-linear work, not 65,535^2 / 2 distances; the
  decisions, and the `comparisons` reported, are the full search's.

Precision: the table's values are the unit's fp32 accumulators (wider than fp16 storage, the
design's accumulation rule); the functional model keeps them at float64, the reference's
precision, which is what makes the decisions bit-identical. Rows the unit's SRAM does not hold
(`resident` and beyond) live in DRAM, each value in two storage elements (the float64 bits in two
float32 words), and are read and written there by every instruction that touches them.
"""

from __future__ import annotations

import numpy as np

from ctac.errors import CtacError
from ctac.runtime.compression import MIN_RELATIVE_DISTANCE, nearest_passing

# Values per table row besides the mean: the mean's squared norm, the member count, the key.
EXTRA_VALUES = 3
# Groups with at least this many tokens in a chunk are clustered token by token
# (`_cluster_group`) instead of in the lockstep over groups, which pays its per-step cost once
# per token of the largest group; without a window, such a group with at least INDEX_MIN_ROWS
# rows is searched through a _GroupIndex, whose `recent` rows are sorted in again once there are
# INDEX_REBUILD of them.
ALONE_MIN_TOKENS = 512
INDEX_MIN_ROWS = 256
INDEX_REBUILD = 512


def _direction(cols: int) -> np.ndarray:
    """The fixed unit vector rows are sorted along (any direction keeps the search exact; a
    generic one separates rows better than an axis)."""
    u = np.random.default_rng(0x17).standard_normal(cols)
    return u / np.linalg.norm(u)


class _GroupIndex:
    """A group's rows sorted by their projection on `_direction`, for the leader search.

    A row c passes a token x when ||x - c||^2 <= t^2 ||c||^2; for t < 1 that is the ball of
    centre x / (1 - t^2) and radius t ||x|| / (1 - t^2), so a passing row's projection lies
    within that radius of the centre's: only the rows sorted inside that band (widened far
    beyond any rounding) are compared, and the decision is the full search's. Rows whose mean
    changed since the sort, and rows whose projection is not finite, are kept in `recent` and
    always compared; a sorted entry whose value is no longer its row's projection is stale."""

    def __init__(self, rows: np.ndarray, projection: np.ndarray) -> None:
        self.rebuild(rows, projection)

    def rebuild(self, rows: np.ndarray, projection: np.ndarray) -> None:
        values = projection[rows]
        finite = np.isfinite(values)
        order = np.argsort(values[finite], kind="stable")
        self.rows, self.values = rows[finite][order], values[finite][order]
        unsorted = rows[~finite]
        # sorted in again once this many rows changed: cheap searches against rare sorts
        self.limit = len(unsorted) + max(INDEX_REBUILD, len(rows) // 64)
        self.recent = np.empty(self.limit + 1, dtype=np.int64)
        self.recent[: len(unsorted)] = unsorted
        self.changed = len(unsorted)

    def add(self, row: int, rows: np.ndarray, projection: np.ndarray) -> None:
        """`row` opened or its mean moved; `rows` are the group's rows."""
        self.recent[self.changed] = row
        self.changed += 1
        if self.changed > self.limit:
            self.rebuild(rows, projection)

    def candidates(self, low: float, high: float, projection: np.ndarray) -> np.ndarray:
        """Rows that may pass (some perhaps twice)."""
        lo = self.values.searchsorted(low, side="left")
        hi = self.values.searchsorted(high, side="right")
        found = self.rows[lo:hi]
        if hi > lo:
            found = found[self.values[lo:hi] == projection[found]]
        if self.changed:
            return np.concatenate((found, self.recent[: self.changed]))
        return found


def row_elements(cols: int) -> int:
    """Storage elements of one table row spilled to DRAM: cols + 3 fp32 values, two each."""
    return 2 * (cols + EXTRA_VALUES)


class ClusterTable:
    """The state of the cluster unit: one table of `cols`-feature rows."""

    def __init__(self, cols: int) -> None:
        self.cols = cols
        self.used = 0
        # Distances the model computed (its work; `comparisons` counts the reference's).
        self.computed = 0
        self._grow(64)

    def _grow(self, capacity: int) -> None:
        old = getattr(self, "means", None)
        means = np.zeros((capacity, self.cols))
        norms, members = np.zeros(capacity), np.zeros(capacity)
        keys = np.zeros(capacity, dtype=np.int64)
        if old is not None:
            used = self.used
            means[:used], norms[:used] = self.means[:used], self.norms[:used]
            members[:used], keys[:used] = self.members[:used], self.keys[:used]
        self.means, self.norms, self.members, self.keys = means, norms, members, keys

    def _reserve(self, rows: int) -> None:
        if self.used + rows > len(self.norms):
            self._grow(max(2 * len(self.norms), self.used + rows))

    # ------------------------------------------------------------------ spilled rows
    def _packed(self, first: int, last: int) -> np.ndarray:
        rows = np.empty((last - first, self.cols + EXTRA_VALUES))
        rows[:, : self.cols] = self.means[first:last]
        rows[:, self.cols] = self.norms[first:last]
        rows[:, self.cols + 1] = self.members[first:last]
        rows[:, self.cols + 2] = self.keys[first:last]
        return rows.view(np.float32)

    def load_spilled(self, dram: np.ndarray, first: int, last: int, resident: int) -> None:
        """Rows [first, last) at and beyond `resident` from their DRAM copy (`dram` starts at
        row `resident`)."""
        first = max(first, resident)
        if last <= first:
            return
        size = row_elements(self.cols)
        words = dram[(first - resident) * size : (last - resident) * size]
        rows = np.ascontiguousarray(words).view(np.float64).reshape(last - first, -1)
        self.means[first:last] = rows[:, : self.cols]
        self.norms[first:last] = rows[:, self.cols]
        self.members[first:last] = rows[:, self.cols + 1]
        keys = rows[:, self.cols + 2]
        if not np.isfinite(keys).all() or np.abs(keys).max(initial=0) >= 2**62:
            raise CtacError("the cluster table's spilled rows in DRAM are corrupt")
        self.keys[first:last] = keys.astype(np.int64)

    def store_spilled(self, dram: np.ndarray, first: int, last: int, resident: int) -> None:
        first = max(first, resident)
        if last <= first:
            return
        size = row_elements(self.cols)
        packed = self._packed(first, last).reshape(-1)
        dram[(first - resident) * size : (last - resident) * size] = packed

    # ------------------------------------------------------------------ clustering
    def cluster(
        self,
        tokens: np.ndarray,
        codes: np.ndarray,
        valid: np.ndarray | None,
        threshold: float,
        window: int = 0,
    ) -> tuple[np.ndarray, int]:
        """Cluster a chunk (rows x cols) in position order; returns each token's row and the
        distance computations made (the reference's `comparisons`). With `window` > 0 a token
        sees only the `window` rows its group opened last (a group's rows open in row order)."""
        n = len(tokens)
        x = tokens.astype(np.float64)
        ok = np.ones(n, dtype=bool) if valid is None else valid
        key = np.where(ok, codes, -1 - codes)
        limit = max(threshold, MIN_RELATIVE_DISTANCE) ** 2
        position = np.arange(n)
        order = np.lexsort((position, key))
        sorted_keys = key[order]
        boundary = np.ones(n, dtype=bool)
        boundary[1:] = sorted_keys[1:] != sorted_keys[:-1]
        starts = np.flatnonzero(boundary)
        sizes = np.diff(np.append(starts, n))
        group_keys = sorted_keys[starts]
        # Each group's candidate slots in opening order: its existing rows, then its new ones.
        table_keys = self.keys[: self.used]
        table_order = np.argsort(table_keys, kind="stable")
        lows = np.searchsorted(table_keys[table_order], group_keys, side="left")
        highs = np.searchsorted(table_keys[table_order], group_keys, side="right")
        slots_of = [
            np.concatenate([table_order[lo:hi], np.empty(size, dtype=np.int64)])
            for lo, hi, size in zip(lows, highs, sizes, strict=True)
        ]
        counts_of = highs - lows
        self._reserve(n)
        base = self.used
        first_token = np.empty(n, dtype=np.int64)  # of each new slot, by provisional index
        slots = np.empty(n, dtype=np.int64)
        comparisons = 0
        # Groups are independent and new rows are renumbered by first token at the end, so the
        # large groups can go first, one token at a time, and the rest in lockstep.
        alone = sizes >= ALONE_MIN_TOKENS
        opened = 0
        for g in np.flatnonzero(alone):
            tokens_of = order[starts[g] : starts[g] + sizes[g]]
            opened, pairs = self._cluster_group(
                slots_of[g], int(counts_of[g]), tokens_of, x, int(group_keys[g]), limit,
                window, base, opened, first_token, slots,
            )  # fmt: skip
            comparisons += pairs
        sizes = np.where(alone, 0, sizes)
        group_order = np.argsort(-sizes, kind="stable")
        sorted_sizes = sizes[group_order]
        for k in range(int(sizes.max(initial=0))):
            groups = group_order[: int(np.searchsorted(-sorted_sizes, -k, side="left"))]
            token = order[starts[groups] + k]
            xk = x[token]
            existing = counts_of[groups]
            compared = np.minimum(existing, window) if window > 0 else existing
            pairs = int(compared.sum())
            join = np.zeros(len(groups), dtype=bool)
            chosen = np.zeros(len(groups), dtype=np.int64)
            if pairs:
                candidates = np.concatenate(
                    [
                        slots_of[g][counts_of[g] - c : counts_of[g]]
                        for g, c in zip(groups, compared, strict=True)
                    ]
                )
                owner = np.repeat(np.arange(len(groups)), compared)
                first_pair = np.cumsum(compared) - compared
                distance = ((self.means[candidates] - xk[owner]) ** 2).sum(axis=-1)
                self.computed += len(candidates)
                allowed = limit * self.norms[candidates]
                rows, picked = nearest_passing(distance, allowed, compared, first_pair)
                join[rows] = True
                chosen[rows] = candidates[picked]
                comparisons += pairs
            new = np.flatnonzero(~join)
            fresh = base + opened + np.arange(len(new))
            chosen[new] = fresh
            first_token[opened : opened + len(new)] = token[new]
            self.keys[fresh] = key[token[new]]
            for g, slot in zip(groups[new], fresh, strict=True):
                slots_of[g][counts_of[g]] = slot
                counts_of[g] += 1
            opened += len(new)
            self.members[chosen] += 1
            self.means[chosen] += (xk - self.means[chosen]) / self.members[chosen][:, None]
            self.norms[chosen] = (self.means[chosen] ** 2).sum(axis=-1)
            slots[token] = chosen
        # New rows in first-token order (the reference numbers rows by first token).
        rank = np.argsort(first_token[:opened], kind="stable")
        final = np.empty(opened, dtype=np.int64)
        final[rank] = np.arange(opened)
        block = slice(base, base + opened)
        for array in (self.means, self.norms, self.members, self.keys):
            array[block] = array[block][rank]
        renamed = slots >= base
        slots[renamed] = base + final[slots[renamed] - base]
        self.used = base + opened
        return slots, comparisons

    def _cluster_group(
        self,
        rows: np.ndarray,
        count: int,
        tokens: np.ndarray,
        x: np.ndarray,
        key: int,
        limit: float,
        window: int,
        base: int,
        opened: int,
        first_token: np.ndarray,
        slots: np.ndarray,
    ) -> tuple[int, int]:
        """The tokens of one group (positions `tokens`, in order) against its rows (`rows`:
        the group's `count` slots in opening order, room for one more per token), deciding as
        the lockstep does; returns the new number of opened slots and the comparisons. Without
        a window and with t < 1, once the group has INDEX_MIN_ROWS rows a token is compared only
        with the rows a _GroupIndex cannot rule out (the comparisons counted are the full
        search's)."""
        searchable = window == 0 and limit < 1 and len(tokens) >= INDEX_MIN_ROWS
        index = None
        comparisons = 0
        if searchable:
            scale = 1.0 / (1.0 - limit)
            direction = _direction(self.cols)
            projection = np.full(len(self.norms), np.nan)
            xs = x[tokens]
            finite = np.isfinite(xs).all(axis=1).tolist()
            centres = ((xs @ direction) * scale).tolist()
            radii = (np.sqrt(limit * (xs * xs).sum(axis=1)) * scale).tolist()
        for i, token in enumerate(tokens.tolist()):
            xt = x[token]
            compared = min(count, window) if window > 0 else count
            comparisons += compared
            if searchable and count >= INDEX_MIN_ROWS and finite[i]:
                if index is None:
                    projection[rows[:count]] = self.means[rows[:count]] @ direction
                    index = _GroupIndex(rows[:count], projection)
                centre, radius = centres[i], radii[i]
                # far wider than any rounding of distances or projections; 1e-150 covers rows
                # whose squared norms are subnormal
                margin = 1e-9 * (abs(centre) + radius) + 1e-150
                candidates = index.candidates(
                    centre - radius - margin, centre + radius + margin, projection
                )
            else:
                candidates = rows[count - compared : count]
            row = -1
            if len(candidates):
                # nearest_passing's rule: the nearest passing row with a finite distance, the
                # first opened on a tie
                distance = ((self.means[candidates] - xt) ** 2).sum(axis=-1)
                self.computed += len(candidates)
                passing = (distance <= limit * self.norms[candidates]) & np.isfinite(distance)
                if passing.any():
                    nearest = distance[passing].min()
                    row = int(candidates[passing & (distance == nearest)].min())
            if row < 0:
                row = base + opened
                first_token[opened] = token
                opened += 1
                self.keys[row] = key
                rows[count] = row
                count += 1
            self.members[row] += 1
            mean = self.means[row : row + 1]
            mean += (xt - mean) / self.members[row : row + 1][:, None]
            self.norms[row : row + 1] = (mean**2).sum(axis=-1)
            slots[token] = row
            if index is not None:
                projection[row] = mean[0] @ direction
                index.add(row, rows[:count], projection)
        return opened, comparisons

    def read(self, row0: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Centroids (storage precision) and real-member counts of rows [row0, row0 + rows);
        rows no cluster uses are zero."""
        centroids = np.zeros((rows, self.cols), dtype=np.float32)
        counts = np.zeros(rows, dtype=np.float32)
        last = min(row0 + rows, self.used)
        if last > row0:
            centroids[: last - row0] = self.means[row0:last]
            real = self.keys[row0:last] >= 0
            counts[: last - row0] = np.where(real, self.members[row0:last], 0.0)
        return centroids, counts
