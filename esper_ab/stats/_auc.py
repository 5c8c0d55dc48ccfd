"""AUC of a statistic for ``valuable``, with a cluster bootstrap over replicates.

For one group, let ``M[r, q]`` be the Mann–Whitney count of (valuable seed in replicate r,
non-valuable seed in replicate q) pairs that the statistic orders correctly (ties count 1/2),
``pos[r]`` and ``neg[r]`` the class counts per replicate. With replicate multiplicities ``w``
from a bootstrap resample, the resampled AUC is ``w·M·w / ((w·pos)(w·neg))``: exactly the
AUC of the table in which replicate r appears w[r] times. At ``w = 1`` it is the AUC.
"""

from __future__ import annotations

import numpy as np


def pair_counts(stat: np.ndarray, valuable: np.ndarray, rep: np.ndarray, n_rep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, pos, neg) for one group; ``stat`` must hold no NaN (unmeasured rows removed)."""
    pos_mask = valuable.astype(bool)
    pos_r = np.bincount(rep[pos_mask], minlength=n_rep).astype(float)
    neg_r = np.bincount(rep[~pos_mask], minlength=n_rep).astype(float)
    M = np.zeros((n_rep, n_rep))
    if not pos_mask.any() or pos_mask.all():
        return M, pos_r, neg_r
    _, dense = np.unique(stat, return_inverse=True)
    dense = dense.astype(np.int64)
    width = int(dense.max()) + 1
    neg_keys = np.sort(rep[~pos_mask] * width + dense[~pos_mask])
    block_start = np.searchsorted(neg_keys, np.arange(n_rep) * width, side="left")
    q = np.arange(n_rep)[None, :]
    query = q * width + dense[pos_mask][:, None]
    left = np.searchsorted(neg_keys, query, side="left") - block_start[None, :]
    right = np.searchsorted(neg_keys, query, side="right") - block_start[None, :]
    wins = left + 0.5 * (right - left)  # (n_pos, n_rep): negatives below + half the ties
    flat = (rep[pos_mask][:, None] * n_rep + q).ravel()
    M = np.bincount(flat, weights=wins.ravel(), minlength=n_rep * n_rep).reshape(n_rep, n_rep)
    return M, pos_r, neg_r


def auc_with_bootstrap(
    M: np.ndarray, pos: np.ndarray, neg: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Point AUC (G,) and bootstrap AUCs (W, G) for stacked groups M (G,R,R), pos/neg (G,R)."""
    den = pos.sum(axis=1) * neg.sum(axis=1)
    auc = np.full(den.shape, np.nan)
    np.divide(M.sum(axis=(1, 2)), den, out=auc, where=den > 0)
    if weights.shape[0] == 0:
        return auc, np.empty((0, len(den)))
    num_b = (np.matmul(weights[None, :, :], M) * weights[None, :, :]).sum(axis=-1).T  # (W, G)
    den_b = (weights @ pos.T) * (weights @ neg.T)
    boot = np.full(num_b.shape, np.nan)
    np.divide(num_b, den_b, out=boot, where=den_b > 0)
    return auc, boot
