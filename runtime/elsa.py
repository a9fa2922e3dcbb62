"""ELSA-style candidate selection (Ham et al., ISCA 2021), the baseline CTA is compared with.

Per query, the angle to each key is estimated from sign-random-projection codes:
theta ~ pi * hamming(code_q, code_k) / bits. Keys whose estimated cosine reaches the threshold
are candidates and only they are attended to exactly; the nearest visible key is always kept so
no query is left without keys. Shared by the reference semantics and the ELSA_SELECT instruction.
"""

from __future__ import annotations

import numpy as np

from ctac.runtime.compression import hash_codes


def popcount(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.uint64)
    count = np.zeros(values.shape, dtype=np.int64)
    while values.any():
        count += (values & np.uint64(1)).astype(np.int64)
        values = values >> np.uint64(1)
    return count


def select(
    q_codes: np.ndarray, k_codes: np.ndarray, visible: np.ndarray, bits: int, threshold: float
) -> np.ndarray:
    """Candidates (..., Sq, Sk) from integer codes (..., Sq) and (..., Sk) and visibility."""
    distance = popcount(np.bitwise_xor(q_codes[..., :, None], k_codes[..., None, :]))
    chosen = np.cos(np.pi * distance / bits) >= threshold
    masked = np.where(visible, distance, bits + 1)
    nearest = masked == masked.min(axis=-1, keepdims=True)
    return visible & (chosen | nearest)


def candidates(
    q: np.ndarray, k: np.ndarray, visible: np.ndarray, bits: int, threshold: float, seed: int
) -> np.ndarray:
    """Candidate keys of every query, for (B, H, Sq, D) queries and (B, H, Sk, D) keys."""
    q_codes = hash_codes(np.asarray(q, dtype=np.float64), bits, seed)
    k_codes = hash_codes(np.asarray(k, dtype=np.float64), bits, seed)
    return select(q_codes, k_codes, visible, bits, threshold)
