"""Row-wise top-k of a dense score block, faster than ``np.argpartition`` on the whole block.

On 2 cores, ``argpartition`` over a 2,048 x 10,000 block costs more than the matrix multiply
that made it. Trick: split the columns into ``m`` strided groups (column j belongs to group
``j % m``); the k best columns of a row all lie in the k groups with the largest maxima (any
element of a group outside those k is beaten by k group maxima). So: one vectorised max over
groups, a small argpartition over the ``m`` group maxima, a gather of ``k * n/m`` values and a
final small argpartition. Exact (ties may order differently), measured in bench/ranker_speed.py.
"""

from __future__ import annotations

import numpy as np

INVALID = np.float32(-1e30)   # scores at or below this never make a list (padding, exclusions)


def group_count(n_cols: int, k: int) -> int:
    """Number of strided groups ``m`` (a divisor-friendly value); 0 means plain argpartition."""
    if n_cols < 4096 or k * 8 > n_cols // 4:
        return 0
    return 1000 if n_cols >= 8000 else 500


def padded_width(n_cols: int, k: int) -> int:
    """Columns the score block must have (n_cols rounded up to a multiple of the group count)."""
    m = group_count(n_cols, k)
    return n_cols if m == 0 else -(-n_cols // m) * m


def topk_rows(scores: np.ndarray, k: int, groups: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` largest entries of every row, best first.

    ``scores`` is (rows, cols) with cols a multiple of ``groups`` when groups > 0. Entries at or
    below ``INVALID`` come back as index -1.
    """
    rows, cols = scores.shape
    k = min(k, cols)
    if k <= 0 or rows == 0:
        return np.empty((rows, 0), np.int64), np.empty((rows, 0), scores.dtype)
    m = group_count(cols, k) if groups is None else groups
    if m and cols % m == 0 and k < m:
        c = cols // m
        gmax = scores.reshape(rows, c, m).max(axis=1)                  # rows x m
        best_groups = np.argpartition(gmax, m - k, axis=1)[:, m - k:]   # rows x k
        cand = (best_groups[:, :, None] + m * np.arange(c)[None, None, :]).reshape(rows, -1)
        vals = np.take_along_axis(scores, cand, axis=1)
    else:
        cand, vals = None, scores
    width = vals.shape[1]
    if k < width:
        sel = np.argpartition(vals, width - k, axis=1)[:, width - k:]
        top_vals = np.take_along_axis(vals, sel, axis=1)
        top_idx = sel if cand is None else np.take_along_axis(cand, sel, axis=1)
    else:
        top_vals = vals
        top_idx = np.broadcast_to(np.arange(width), vals.shape) if cand is None else cand
    order = np.argsort(-top_vals, axis=1, kind="stable")
    top_idx = np.take_along_axis(top_idx, order, axis=1).astype(np.int64)
    top_vals = np.take_along_axis(top_vals, order, axis=1)
    top_idx[top_vals <= INVALID] = -1
    return top_idx, top_vals
