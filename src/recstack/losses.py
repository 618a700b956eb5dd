"""Retrieval and ranking losses as plain functions.

Conventions shared by every function here:

* ``pos``: scores of the positive item, shape ``[B]``.
* ``neg``: scores of the negatives, shape ``[B, N]`` (a ``[B]`` tensor means one negative each).
* ``logits``: ``[B, C]`` scores over a candidate set.
* ``weight``: optional per-example weights ``[B]``. With ``reduction="mean"`` the result is the
  weighted mean ``sum(w * l) / sum(w)`` (the convention of ``torch.nn.functional.cross_entropy``),
  so all-ones weights equal no weights; ``"sum"`` gives ``sum(w * l)``; ``"none"`` gives ``w * l``.
* Scores may arrive in bf16/fp16 (autocast); every log-sigmoid / log-softmax / logsumexp is taken
  in float32, and the returned loss is float32. Outputs live on the inputs' device.

logQ correction (Bengio & Senecal 2008; Yi et al. 2019, "Sampling-bias-corrected neural
modeling for large corpus item recommendations"): when candidates are drawn with probability
Q(i), the softmax over the sample is a biased estimate of the full softmax; using the corrected
logit ``s_i - log Q(i)`` removes the bias. The sign matters: popular items (large Q) are sampled
often, so their logits are *lowered*. The correction is applied after the temperature, i.e.
``s_i / temperature - log Q(i)``, because it corrects the logit that enters the softmax.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "accidental_hits",
    "bce_loss",
    "bpr_loss",
    "cosine_contrastive_loss",
    "full_softmax_loss",
    "in_batch_softmax_loss",
    "info_nce_loss",
    "mixed_logq",
    "mixed_negative_loss",
    "sampled_softmax_loss",
]

Reduction = Literal["mean", "sum", "none"]

# Finite stand-in for -inf: exp() of it is exactly 0 in float32, but unlike -inf it can never
# produce NaN (e.g. -inf - -inf) should a caller mask a whole row.
_MASKED = torch.finfo(torch.float32).min


def _reduce(per_example: Tensor, weight: Tensor | None, reduction: Reduction) -> Tensor:
    """Apply optional per-example weights, then the reduction (see module docstring)."""
    if weight is not None:
        weight = weight.to(per_example.dtype)
        per_example = per_example * weight
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return per_example.sum()
    if reduction == "mean":
        if weight is None:
            return per_example.mean()
        # clamp keeps an all-zero weight vector at 0 instead of NaN
        return per_example.sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _as_2d(neg: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1]`` so one negative and many negatives share one code path."""
    return neg.unsqueeze(-1) if neg.dim() == 1 else neg


def _cross_entropy_first(logits: Tensor) -> Tensor:
    """Per-row ``-log softmax(logits)[:, 0]`` (positive in column 0), float32."""
    return torch.logsumexp(logits, dim=-1) - logits[:, 0]


def _cross_entropy_diag(logits: Tensor) -> Tensor:
    """Per-row ``-log softmax(logits)[i, i]`` (positives on the diagonal), float32."""
    return torch.logsumexp(logits, dim=-1) - logits.diagonal()


def accidental_hits(pos_ids: Tensor, neg_ids: Tensor) -> Tensor:
    """Mask of sampled negatives that are actually the positive item.

    Args:
        pos_ids: positive item ids ``[B]``.
        neg_ids: negative item ids ``[B, N]`` (per-row) or ``[N]`` (shared by the batch).

    Returns:
        BoolTensor ``[B, N]``, True where ``neg_ids == pos_ids`` (feed it to
        ``sampled_softmax_loss(remove_accidental_hits=...)``).
    """
    if neg_ids.dim() == 1:
        neg_ids = neg_ids.unsqueeze(0)
    return neg_ids == pos_ids.unsqueeze(-1)


def bce_loss(
    pos: Tensor,
    neg: Tensor,
    *,
    neg_reduction: Literal["sum", "mean"] = "sum",
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Pointwise binary cross-entropy with k negatives.

    Per example: ``-log sigmoid(pos) - sum_j log(1 - sigmoid(neg_j))``. With the default
    ``neg_reduction="sum"`` every negative counts as a full example (the classic "1 positive + k
    negatives" logistic loss, so the negative part grows with k); ``"mean"`` averages the
    negatives instead, keeping positive and negative parts balanced whatever k is.

    Args:
        pos: positive scores (logits) ``[B]``.
        neg: negative scores ``[B, N]`` or ``[B]``.
        neg_reduction: how the N negative terms are combined, ``"sum"`` or ``"mean"``.
        weight: optional per-example weights ``[B]``.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss (or ``[B]`` for ``reduction="none"``), float32.
    """
    pos = pos.float()
    neg = _as_2d(neg).float()
    # log(1 - sigmoid(x)) == logsigmoid(-x), stable for large |x|
    neg_terms = -F.logsigmoid(-neg)
    if neg_reduction == "sum":
        neg_part = neg_terms.sum(-1)
    elif neg_reduction == "mean":
        neg_part = neg_terms.mean(-1)
    else:
        raise ValueError(f"neg_reduction must be 'sum' or 'mean', got {neg_reduction!r}")
    return _reduce(-F.logsigmoid(pos) + neg_part, weight, reduction)


def bpr_loss(
    pos: Tensor,
    neg: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Bayesian Personalised Ranking (Rendle et al. 2009).

    Per example: ``mean_j -log sigmoid(pos - neg_j)`` (averaged over the N negatives).

    Args:
        pos: positive scores ``[B]``.
        neg: negative scores ``[B, N]`` or ``[B]``.
        weight: optional per-example weights ``[B]``.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss (or ``[B]`` for ``reduction="none"``), float32.
    """
    diff = pos.float().unsqueeze(-1) - _as_2d(neg).float()
    return _reduce(-F.logsigmoid(diff).mean(-1), weight, reduction)


def sampled_softmax_loss(
    pos: Tensor,
    neg: Tensor,
    pos_logq: Tensor | None = None,
    neg_logq: Tensor | None = None,
    temperature: float = 1.0,
    remove_accidental_hits: Tensor | None = None,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Softmax cross-entropy over ``[pos, neg_1, ..., neg_N]`` with optional logQ correction.

    Corrected logit of candidate i: ``s_i / temperature - log Q(i)``, where ``Q(i)`` is the
    probability that the sampler draws item i (see the module docstring for the sign). Pass the
    positive's ``pos_logq`` as well for the consistent estimator (the positive is corrected like
    any candidate, as in TensorFlow's ``sampled_softmax_loss``); a constant logQ (uniform
    sampler) shifts every logit equally and changes nothing.

    Args:
        pos: positive scores ``[B]``.
        neg: negative scores ``[B, N]`` or ``[B]``.
        pos_logq: log sampling probability of each positive ``[B]``, or None.
        neg_logq: log sampling probability of each negative ``[B, N]`` (or ``[N]`` when the
            negatives are shared by the batch), or None.
        temperature: divides the raw scores.
        remove_accidental_hits: optional BoolTensor ``[B, N]``; True marks a negative that is
            the positive item itself. Those logits are masked out (contribute exactly 0 to the
            partition function). Build it with :func:`accidental_hits`.
        weight: optional per-example weights ``[B]``.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss (or ``[B]`` for ``reduction="none"``), float32.
    """
    one_neg = neg.dim() == 1
    pos_logit = pos.float() / temperature
    neg_logit = _as_2d(neg).float() / temperature
    if pos_logq is not None:
        pos_logit = pos_logit - pos_logq.float()
    if neg_logq is not None:
        neg_logq = neg_logq.float()
        if one_neg:
            neg_logq = neg_logq.unsqueeze(-1)  # [B] -> [B, 1]
        elif neg_logq.dim() == 1:
            neg_logq = neg_logq.unsqueeze(0)  # [N] shared by the batch -> broadcast over rows
        neg_logit = neg_logit - neg_logq
    if remove_accidental_hits is not None:
        neg_logit = neg_logit.masked_fill(_as_2d(remove_accidental_hits), _MASKED)
    logits = torch.cat([pos_logit.unsqueeze(-1), neg_logit], dim=-1)
    return _reduce(_cross_entropy_first(logits), weight, reduction)


def in_batch_softmax_loss(
    query: Tensor,
    item: Tensor,
    item_ids: Tensor | None = None,
    logq: Tensor | None = None,
    temperature: float = 1.0,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """In-batch softmax: every other item of the batch is a negative for each query.

    ``logits = query @ item.T / temperature`` (``[B, B]``), the label of row i is column i.
    The batch's items are effectively sampled from the training-item frequency distribution,
    so popular items are over-represented as negatives; pass ``logq`` (log of each batch item's
    sampling probability, e.g. ``InBatchSampler.logq(item_ids)``) to subtract it from each column
    (Yi et al. 2019).

    Args:
        query: query/user embeddings ``[B, d]``.
        item: embeddings of each query's positive item ``[B, d]``.
        item_ids: item ids ``[B]``; when given, a column j != i holding the same item as the
            positive of row i is masked, so duplicates of the positive are not used as negatives.
        logq: log sampling probability of each batch item ``[B]`` (applied per column), or None.
        temperature: divides the dot products.
        weight: optional per-example weights ``[B]``.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss (or ``[B]`` for ``reduction="none"``), float32.
    """
    # matmul may run in bf16 under autocast; everything after it is float32
    logits = (query @ item.transpose(0, 1)).float() / temperature
    if logq is not None:
        logits = logits - logq.float().unsqueeze(0)
    if item_ids is not None:
        logits = logits.masked_fill(_duplicate_mask(item_ids, item_ids), _MASKED)
    return _reduce(_cross_entropy_diag(logits), weight, reduction)


def _duplicate_mask(row_ids: Tensor, col_ids: Tensor) -> Tensor:
    """``[B, C]`` mask of columns holding row i's positive, except the diagonal label itself."""
    hits = row_ids.unsqueeze(1) == col_ids.unsqueeze(0)
    rows = torch.arange(hits.shape[0], device=hits.device).unsqueeze(1)
    cols = torch.arange(hits.shape[1], device=hits.device).unsqueeze(0)
    return hits & (rows != cols)


def mixed_logq(logq_pop: Tensor, n_items: int, n_batch: int, n_uniform: int) -> Tensor:
    """Log-probability of items under Mixed Negative Sampling's candidate distribution.

    MNS draws ``n_batch`` candidates from the frequency (unigram) distribution (the batch
    positives) and ``n_uniform`` uniformly over ``n_items``. The expected count of item i in the
    candidate set is ``n_batch * p(i) + n_uniform / n_items``; normalised, this is the mixture
    probability ``Q*(i)`` that should be subtracted from *every* candidate's logit, whichever
    part it came from (Yang et al. 2020).

    Args:
        logq_pop: log frequency probability ``log p(i)`` of the items, any shape.
        n_items: catalogue size.
        n_batch: number of in-batch candidates (batch size).
        n_uniform: number of extra uniformly sampled candidates.

    Returns:
        ``log Q*(i)``, same shape as ``logq_pop``, float32.
    """
    total = n_batch + n_uniform
    lp = logq_pop.float()
    if n_uniform == 0:
        return lp
    if n_batch == 0:
        return torch.full_like(lp, -math.log(n_items))
    # logaddexp keeps tiny probabilities accurate
    a = lp + math.log(n_batch / total)
    b = torch.full_like(lp, math.log(n_uniform / (total * n_items)))
    return torch.logaddexp(a, b)


def mixed_negative_loss(
    query: Tensor,
    item: Tensor,
    neg_item: Tensor,
    item_ids: Tensor,
    neg_ids: Tensor,
    logq_batch: Tensor | None = None,
    logq_neg: Tensor | None = None,
    temperature: float = 1.0,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Mixed Negative Sampling (Yang et al. 2020): in-batch items plus shared uniform items.

    Candidates of each query = the B batch items + N extra items ``neg_item`` (``[N, d]``, shared
    by the whole batch); logits ``[B, B + N]``, label of row i is column i. Duplicates of row i's
    positive among the other batch columns and among the extra items are masked.

    For logQ correction both parts should use the log-probability under the *mixed* candidate
    distribution (build them with :func:`mixed_logq`); any constant offset common to all
    candidates is irrelevant, but the two parts must be on the same scale.

    Args:
        query: query embeddings ``[B, d]``.
        item: positive item embeddings ``[B, d]``.
        neg_item: extra (uniformly sampled) item embeddings ``[N, d]``.
        item_ids: positive item ids ``[B]``.
        neg_ids: extra item ids ``[N]``.
        logq_batch: log sampling probability of the batch items ``[B]``, or None.
        logq_neg: log sampling probability of the extra items ``[N]``, or None.
        temperature: divides the dot products.
        weight: optional per-example weights ``[B]``.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss (or ``[B]`` for ``reduction="none"``), float32.
    """
    candidates = torch.cat([item, neg_item.to(item.dtype)], dim=0)
    logits = (query @ candidates.transpose(0, 1)).float() / temperature
    if logq_batch is not None or logq_neg is not None:
        zb = torch.zeros(len(item_ids), device=logits.device)
        zn = torch.zeros(len(neg_ids), device=logits.device)
        lq = torch.cat(
            [
                logq_batch.float() if logq_batch is not None else zb,
                logq_neg.float() if logq_neg is not None else zn,
            ]
        )
        logits = logits - lq.unsqueeze(0)
    cand_ids = torch.cat([item_ids, neg_ids.to(item_ids.dtype)])
    logits = logits.masked_fill(_duplicate_mask(item_ids, cand_ids), _MASKED)
    return _reduce(_cross_entropy_diag(logits), weight, reduction)


def full_softmax_loss(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = -100,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Cross-entropy over the whole catalogue.

    Args:
        logits: scores ``[..., C]`` (e.g. ``[B, C]`` or ``[B, L, C]`` for sequence models).
        target: item indices ``[...]``; entries equal to ``ignore_index`` (padding) contribute
            nothing and are left out of the mean's denominator.
        ignore_index: target value to skip.
        weight: optional per-example weights, same shape as ``target``.
        reduction: ``"mean"`` over non-ignored entries (default), ``"sum"`` or ``"none"``
            (``"none"`` returns 0 at ignored positions).

    Returns:
        Scalar loss (or per-entry losses for ``reduction="none"``), float32. If every entry
        is ignored the mean is 0 (not NaN).
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    tgt = target.reshape(-1)
    valid = tgt != ignore_index
    safe_tgt = torch.where(valid, tgt, torch.zeros_like(tgt))
    per = torch.logsumexp(flat, dim=-1) - flat.gather(1, safe_tgt.unsqueeze(1)).squeeze(1)
    per = torch.where(valid, per, torch.zeros_like(per))
    w = valid.float() if weight is None else valid.float() * weight.reshape(-1).float()
    out = _reduce(per, w, reduction)
    return out.reshape(target.shape) if reduction == "none" else out


def info_nce_loss(
    a: Tensor,
    b: Tensor,
    temperature: float = 0.1,
    symmetric: bool = False,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """InfoNCE contrastive loss on L2-normalised embeddings, positives on the diagonal.

    ``logits = normalize(a) @ normalize(b).T / temperature``; row i's positive is ``b[i]``, all
    other rows of ``b`` are negatives. With ``symmetric=True`` the loss is the average of the
    a->b and b->a directions (CLIP-style).

    Args:
        a: first view ``[B, d]``.
        b: second view ``[B, d]``.
        temperature: softmax temperature on cosine similarities.
        symmetric: also contrast b against a and average.
        weight: optional per-example weights ``[B]``.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss (or ``[B]`` for ``reduction="none"``), float32.
    """
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = (a @ b.transpose(0, 1)).float() / temperature
    per = _cross_entropy_diag(logits)
    if symmetric:
        per = 0.5 * (per + _cross_entropy_diag(logits.transpose(0, 1)))
    return _reduce(per, weight, reduction)


def cosine_contrastive_loss(
    pos_cos: Tensor,
    neg_cos: Tensor,
    margin: float = 0.8,
    neg_weight: float | None = None,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Cosine Contrastive Loss of SimpleX (Mao et al., CIKM 2021).

    Per example: ``(1 - pos_cos) + (w / N) * sum_j max(0, neg_cos_j - margin)``. Only negatives
    whose cosine exceeds the margin are pushed away, which filters the many easy negatives that
    a large sampling ratio brings.

    Defaults: the paper treats the margin m and the negative weight w as per-dataset
    hyper-parameters (m searched in [0, 1], best values typically high, around 0.8-0.9, with
    hundreds to a thousand negatives per positive); it has no universal default. Here
    ``margin=0.8``, and ``neg_weight=None`` means ``w = N``, i.e. a plain sum over the negatives
    (what the authors' reference implementation does when no weight is set). RecBole's SimpleX
    configuration uses ``margin=0.9, negative_weight=10``.

    Args:
        pos_cos: cosine similarity of each positive pair ``[B]``.
        neg_cos: cosine similarities with the negatives ``[B, N]`` or ``[B]``.
        margin: negatives below this cosine contribute nothing.
        neg_weight: w; None -> N (sum over negatives).
        weight: optional per-example weights ``[B]``.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` or ``"none"``.

    Returns:
        Scalar loss (or ``[B]`` for ``reduction="none"``), float32.
    """
    neg = torch.relu(_as_2d(neg_cos).float() - margin)
    neg_part = neg.sum(-1) if neg_weight is None else neg_weight * neg.mean(-1)
    return _reduce(1.0 - pos_cos.float() + neg_part, weight, reduction)
