"""Vectorised negative samplers.

All samplers work on encoded indices (users ``0..n_users-1``, items ``0..n_items-1``), keep
their tables on one device (``device`` argument) and return tensors there. Randomness comes
from ``generator`` (a ``torch.Generator`` on the sampler's device), or a private generator
seeded with ``seed``, or, when neither is given, torch's global RNG (so ``torch.manual_seed``
applies). ``sample`` also accepts a per-call ``generator``.

Exclusion of a user's positives is shared by every sampler through :class:`PositiveSet`: the
(user, item) pairs are encoded once as sorted int64 keys ``user * n_items + item`` on the
device, and membership of a whole batch is one ``torch.searchsorted``. Samplers draw, test,
redraw only the rejected entries, and repeat; see :meth:`UniformSampler.sample` for the bound.

Typical pairing with the losses in :mod:`recstack.losses`:

* ``UniformSampler`` / ``PopularitySampler`` -> ``sampled_softmax_loss(..., neg_logq=s.logq(neg))``
  (or ``bpr_loss`` / ``bce_loss``, which need no logQ).
* ``InBatchSampler`` -> ``in_batch_softmax_loss(q, v, item_ids, logq=s.logq(item_ids))``.
* ``HardNegativeSampler`` -> any pairwise/pointwise loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

__all__ = [
    "HardNegativeSampler",
    "InBatchSampler",
    "PopularitySampler",
    "PositiveSet",
    "UniformSampler",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]

# Bounds the memory of the exact fallback sampler: rows * n_items float64 entries per chunk.
_FALLBACK_CHUNK_ELEMS = 1 << 22


def _make_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device
) -> torch.Generator | None:
    """Explicit generator > private generator from ``seed`` > None (torch's global RNG)."""
    if generator is not None:
        return generator
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


class PositiveSet:
    """The set of (user, item) positives, on device, with vectorised membership tests.

    Pairs are stored as a sorted, de-duplicated int64 tensor of keys ``user * n_items + item``;
    :meth:`contains` hashes its queries the same way and looks them up with
    ``torch.searchsorted``: O(log nnz) per query, no Python loop, no host sync.

    Args:
        matrix: user x item matrix whose stored non-zero entries are the positives
            (e.g. the training ``csr_matrix``).
        device: where the keys live (queries are moved there).
    """

    def __init__(
        self, matrix: sp.spmatrix | sp.sparray, device: str | torch.device = "cpu"
    ) -> None:
        coo = sp.coo_matrix(matrix)
        nz = coo.data != 0  # explicitly stored zeros are not interactions
        self.n_users, self.n_items = (int(s) for s in coo.shape)
        self.device = torch.device(device)
        keys = np.unique(coo.row[nz].astype(np.int64) * self.n_items + coo.col[nz].astype(np.int64))
        self.keys = torch.from_numpy(keys).to(self.device)
        self._np_keys = keys
        self.degree = torch.from_numpy(
            np.bincount(keys // self.n_items, minlength=self.n_users).astype(np.int64)
        ).to(self.device)

    @classmethod
    def from_pairs(
        cls,
        users: np.ndarray | Tensor,
        items: np.ndarray | Tensor,
        n_users: int,
        n_items: int,
        device: str | torch.device = "cpu",
    ) -> PositiveSet:
        """Build from parallel arrays of user and item indices (duplicates are fine)."""
        u = np.asarray(torch.as_tensor(users).cpu(), dtype=np.int64)
        i = np.asarray(torch.as_tensor(items).cpu(), dtype=np.int64)
        m = sp.coo_matrix((np.ones(len(u), dtype=np.int8), (u, i)), shape=(n_users, n_items))
        return cls(m, device=device)

    def __len__(self) -> int:
        return int(self.keys.numel())

    def to(self, device: str | torch.device) -> PositiveSet:
        """A copy whose tensors live on ``device`` (self if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        out = object.__new__(PositiveSet)
        out.__dict__.update(self.__dict__)
        out.device, out.keys, out.degree = device, self.keys.to(device), self.degree.to(device)
        return out

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """Whether each (user, item) pair is a positive.

        Args:
            users: user indices, any shape broadcastable with ``items``.
            items: item indices in ``[0, n_items)`` (not validated: an out-of-range item would
                alias another user's key).

        Returns:
            BoolTensor of the broadcast shape, on this set's device.
        """
        users = users.to(self.device, torch.int64)
        items = items.to(self.device, torch.int64)
        query = users * self.n_items + items
        if self.keys.numel() == 0:
            return torch.zeros(query.shape, dtype=torch.bool, device=self.device)
        idx = torch.searchsorted(self.keys, query.contiguous())
        return self.keys[idx.clamp_max(self.keys.numel() - 1)] == query

    def user_item_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The positives as (users, items) numpy arrays (host copy, for set-up code)."""
        return self._np_keys // self.n_items, self._np_keys % self.n_items


class _ExcludingSampler:
    """Shared machinery: draw from a fixed item distribution, reject the user's positives.

    Subclasses set the distribution through ``weights`` (None = uniform) and implement
    ``_draw(k, generator) -> LongTensor[k]``.
    """

    def __init__(
        self,
        n_items: int,
        weights: np.ndarray | None,
        exclude: sp.spmatrix | sp.sparray | PositiveSet | None,
        device: str | torch.device,
        seed: int | None,
        generator: torch.Generator | None,
        max_rounds: int,
    ) -> None:
        if n_items <= 0:
            raise ValueError(f"n_items must be positive, got {n_items}")
        self.n_items = int(n_items)
        self.device = torch.device(device)
        self.generator = _make_generator(seed, generator, self.device)
        self.max_rounds = int(max_rounds)
        p = (
            np.full(self.n_items, 1.0 / self.n_items)
            if weights is None
            else weights / weights.sum()
        )
        self._p64 = p
        with np.errstate(divide="ignore"):
            self._log_p = torch.from_numpy(np.log(p)).float().to(self.device)

        if exclude is None:
            self.positives: PositiveSet | None = None
            return
        self.positives = (
            exclude.to(self.device)
            if isinstance(exclude, PositiveSet)
            else PositiveSet(exclude, self.device)
        )
        if self.positives.n_items != self.n_items:
            raise ValueError(
                f"exclude has {self.positives.n_items} item columns, sampler has {self.n_items} items"
            )
        # Per user: how many drawable items are not positives (0 -> no negative exists), and the
        # probability mass left on them (normaliser of the per-user sampling distribution).
        u, i = self.positives.user_item_arrays()
        support = p > 0
        n_users = self.positives.n_users
        pos_in_support = np.bincount(u[support[i]], minlength=n_users)
        self._n_free = torch.from_numpy(int(support.sum()) - pos_in_support).to(self.device)
        free_mass = 1.0 - np.bincount(u, weights=p[i], minlength=n_users)
        free_mass = np.where(pos_in_support >= support.sum(), 0.0, np.clip(free_mass, 1e-300, 1.0))
        with np.errstate(divide="ignore"):
            self._log_free_mass = torch.from_numpy(np.log(free_mass)).float().to(self.device)

    # -- to implement ----------------------------------------------------------------------------
    def _draw(self, k: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    # -- public API --------------------------------------------------------------------------------
    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` items from the sampling distribution with no exclusion: negatives shared by a
        whole batch. Mask the user's positives among them with ``positives.contains``."""
        return self._draw(n, generator if generator is not None else self.generator)

    def sample(self, users: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` negatives per user.

        With ``exclude``, no returned item is among that user's positives: all ``B * n`` items
        are drawn at once, membership is tested in one ``searchsorted``, and only rejected
        entries are redrawn, for at most ``max_rounds`` rounds. Entries still rejected after that
        (users whose positives hold almost all the probability mass) are drawn exactly from the
        user's renormalised distribution over non-positives (a dense per-entry CDF, built in
        chunks), so the result is always valid and the loop always ends.

        Args:
            users: user indices ``[B]``.
            n: negatives per user.
            generator: overrides the sampler's generator for this call.

        Returns:
            LongTensor ``[B, n]`` on the sampler's device.

        Raises:
            ValueError: a user in the batch has interacted with every item the sampler can
                draw, so no negative exists.
        """
        users = torch.as_tensor(users, device=self.device).long().reshape(-1)
        gen = generator if generator is not None else self.generator
        b = users.numel()
        items = self._draw(b * n, gen)
        if self.positives is None or items.numel() == 0:
            return items.view(b, n)
        self._check_has_negatives(users)
        flat_users = users.repeat_interleave(n)
        pending = self.positives.contains(flat_users, items).nonzero().squeeze(1)
        for _ in range(self.max_rounds):
            if pending.numel() == 0:
                break
            redraw = self._draw(pending.numel(), gen)
            items[pending] = redraw
            pending = pending[self.positives.contains(flat_users[pending], redraw)]
        if pending.numel() > 0:
            items[pending] = self._draw_exact(flat_users[pending], gen)
        return items.view(b, n)

    __call__ = sample

    def sample_fixed(self, users: Tensor, n: int, rounds: int = 3,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` negatives per user with a fixed amount of work and no host sync (so it can be
        captured in a CUDA graph): draw, then redraw the entries that hit a positive, `rounds`
        times, each round over the whole ``[B, n]`` tensor (``torch.where``, no data-dependent
        shapes). Entries still on a positive afterwards are returned marked, for the caller to
        mask out of its loss: with a sparse user (Gowalla: 27 positives in 41k items) the chance
        is about ``(27 / 41k) ** (rounds + 1)``, i.e. nil.

        Returns:
            ``(items [B, n], still_positive [B, n] bool)`` on the sampler's device.
        """
        users = torch.as_tensor(users, device=self.device).long().reshape(-1)
        gen = generator if generator is not None else self.generator
        b = users.numel()
        items = self._draw(b * n, gen).view(b, n)
        if self.positives is None:
            return items, torch.zeros_like(items, dtype=torch.bool)
        uu = users.unsqueeze(1).expand(b, n)
        hit = self.positives.contains(uu, items)
        for _ in range(rounds):
            items = torch.where(hit, self._draw(b * n, gen).view(b, n), items)
            hit = self.positives.contains(uu, items)
        return items, hit

    def logq(self, items: Tensor, users: Tensor | None = None) -> Tensor:
        """Log sampling probability of ``items`` (float32, same shape, sampler's device).

        Without ``users``: ``log P(i)`` of the base distribution, the value the logQ correction
        usually uses. With ``users`` (``[B]``, broadcast over the trailing dims of ``items``)
        and an ``exclude`` set: the exact per-user probability after exclusion,
        ``log P(i) - log(sum of P over the user's non-positives)``.
        """
        items = torch.as_tensor(items, device=self.device).long()
        out = self._log_p[items]
        if users is None or self.positives is None:
            return out
        users = torch.as_tensor(users, device=self.device).long()
        lfm = self._log_free_mass[users]
        return out - lfm.reshape(lfm.shape + (1,) * (items.dim() - users.dim()))

    # -- internals ---------------------------------------------------------------------------------
    def _check_has_negatives(self, users: Tensor) -> None:
        stuck = self._n_free[users] <= 0
        if bool(stuck.any()):
            bad = torch.unique(users[stuck]).tolist()[:10]
            raise ValueError(
                f"users {bad} have interacted with every item this sampler can draw; "
                "no negative exists for them (drop them from the batch or the exclude set)"
            )

    def _draw_exact(self, users: Tensor, generator: torch.Generator | None) -> Tensor:
        """One draw per entry from P restricted to the entry user's non-positives (CDF search)."""
        assert self.positives is not None
        w = torch.from_numpy(self._p64).to(self.device)
        all_items = torch.arange(self.n_items, device=self.device)
        out = torch.empty(users.numel(), dtype=torch.long, device=self.device)
        step = max(1, _FALLBACK_CHUNK_ELEMS // self.n_items)
        # loop over chunks of rows only, to bound memory; each chunk is fully vectorised
        for s in range(0, users.numel(), step):
            uu = users[s : s + step]
            mask = self.positives.contains(uu.unsqueeze(1), all_items.unsqueeze(0))
            cdf = w.expand(len(uu), -1).masked_fill(mask, 0.0).cumsum(1)
            # r in (0, total]: searching with right=False never lands on a zero-mass item
            r = (1.0 - self._rand(len(uu), generator)).unsqueeze(1) * cdf[:, -1:]
            out[s : s + step] = torch.searchsorted(cdf, r).squeeze(1).clamp_max(self.n_items - 1)
        return out

    def _rand(self, k: int, generator: torch.Generator | None) -> Tensor:
        return torch.rand(k, dtype=torch.float64, device=self.device, generator=generator)


class UniformSampler(_ExcludingSampler):
    """Uniform negatives over ``n_items``, optionally excluding each user's positives.

    Args:
        n_items: catalogue size.
        exclude: user x item matrix (or a ready :class:`PositiveSet`) of positives never to
            return for that user; None samples from the whole catalogue.
        device: where tables and outputs live.
        seed: seeds a private ``torch.Generator`` (reproducible draws).
        generator: an explicit generator on ``device`` (takes precedence over ``seed``).
        max_rounds: rejection rounds before the exact fallback (see :meth:`sample`).
    """

    def __init__(
        self,
        n_items: int,
        exclude: sp.spmatrix | sp.sparray | PositiveSet | None = None,
        device: str | torch.device = "cpu",
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        max_rounds: int = 32,
    ) -> None:
        super().__init__(n_items, None, exclude, device, seed, generator, max_rounds)

    def _draw(self, k: int, generator: torch.Generator | None) -> Tensor:
        return torch.randint(0, self.n_items, (k,), device=self.device, generator=generator)

    def logq(self, items: Tensor, users: Tensor | None = None) -> Tensor:
        """``-log n_items`` for every item (per-user ``-log(#non-positives)`` with ``users``)."""
        return super().logq(items, users)


class PopularitySampler(_ExcludingSampler):
    """Negatives with ``P(i) proportional to count_i ** alpha`` (word2vec-style smoothing).

    Sampling is inverse-CDF: ``searchsorted(cdf, uniform)`` on a float64 CDF, O(log n_items)
    per draw, fine for millions of items. Items with zero count are never drawn (for
    ``alpha > 0``); add a pseudo-count to the counts if they should be.

    Args:
        item_counts: interaction count per item ``[n_items]`` (array, list or tensor).
        alpha: popularity exponent; 0 = uniform, 1 = proportional to counts.
        exclude: positives never to return for that user (see :class:`UniformSampler`).
        device: as for :class:`UniformSampler`.
        seed: as for :class:`UniformSampler`.
        generator: as for :class:`UniformSampler`.
        max_rounds: as for :class:`UniformSampler`.
    """

    def __init__(
        self,
        item_counts: np.ndarray | Tensor | list[float],
        alpha: float = 0.75,
        exclude: sp.spmatrix | sp.sparray | PositiveSet | None = None,
        device: str | torch.device = "cpu",
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        max_rounds: int = 32,
    ) -> None:
        counts = np.asarray(torch.as_tensor(item_counts).cpu(), dtype=np.float64).reshape(-1)
        if (counts < 0).any() or not np.isfinite(counts).all():
            raise ValueError("item_counts must be finite and non-negative")
        weights = np.power(counts, alpha)
        if weights.sum() <= 0:
            raise ValueError("item_counts ** alpha has no positive entry; nothing can be sampled")
        self.alpha = float(alpha)
        super().__init__(len(counts), weights, exclude, device, seed, generator, max_rounds)
        cdf = np.cumsum(self._p64)
        cdf /= cdf[-1]  # exact 1.0 at the end, so a draw in (0, 1] always lands in range
        self._cdf = torch.from_numpy(cdf).to(self.device)

    @classmethod
    def from_matrix(
        cls,
        matrix: sp.spmatrix | sp.sparray,
        alpha: float = 0.75,
        exclude_positives: bool = True,
        device: str | torch.device = "cpu",
        **kw: int | torch.Generator | None,
    ) -> PopularitySampler:
        """Counts = number of stored interactions per item column of ``matrix``; with
        ``exclude_positives`` the same matrix is the exclusion set. ``kw``: seed, generator,
        max_rounds."""
        m = sp.csr_matrix(matrix)
        exclude = m if exclude_positives else None
        return cls(m.getnnz(axis=0), alpha, exclude, device, **kw)  # type: ignore[arg-type]

    def _draw(self, k: int, generator: torch.Generator | None) -> Tensor:
        r = 1.0 - self._rand(k, generator)  # (0, 1]
        return torch.searchsorted(self._cdf, r).clamp_max(self.n_items - 1)


class InBatchSampler:
    """The batch's own positives as negatives, with their logQ from training frequency.

    In-batch negatives are items drawn as *positives* of other examples, i.e. from the
    empirical item frequency of the training data; :meth:`logq` returns
    ``log(count_i / total)``, the probability that a random training interaction (batch
    positive) is item i. Use it with :func:`recstack.losses.in_batch_softmax_loss`::

        items, logq = sampler(item_ids)
        loss = in_batch_softmax_loss(q, item_emb(items), item_ids=items, logq=logq)

    The batch-size factor (expected count = B * p_i) is the same for all items and cancels in
    the softmax, so it is left out.

    Args:
        item_counts: training interaction count per item ``[n_items]``. Zero counts are
            treated as 1 (an item seen in a batch occurred at least once), which keeps logQ
            finite.
        device: where the table and outputs live.
    """

    def __init__(
        self, item_counts: np.ndarray | Tensor | list[float], device: str | torch.device = "cpu"
    ) -> None:
        counts = np.asarray(torch.as_tensor(item_counts).cpu(), dtype=np.float64).reshape(-1)
        if (counts < 0).any() or counts.sum() <= 0:
            raise ValueError("item_counts must be non-negative with a positive total")
        self.device = torch.device(device)
        self.n_items = len(counts)
        log_p = np.log(np.maximum(counts, 1.0)) - math.log(counts.sum())
        self._log_p = torch.from_numpy(log_p).float().to(self.device)

    @classmethod
    def from_matrix(
        cls, matrix: sp.spmatrix | sp.sparray, device: str | torch.device = "cpu"
    ) -> InBatchSampler:
        """Counts = number of stored interactions per item column of ``matrix``."""
        return cls(sp.csr_matrix(matrix).getnnz(axis=0), device)

    def logq(self, items: Tensor) -> Tensor:
        """``log(count_i / total)`` for each item (float32, same shape)."""
        return self._log_p[torch.as_tensor(items, device=self.device).long()]

    def sample(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """Return the batch's items ``[B]`` (on the sampler's device) and their logQ ``[B]``."""
        items = torch.as_tensor(items, device=self.device).long()
        return items, self.logq(items)

    __call__ = sample

    @staticmethod
    def negatives(items: Tensor) -> Tensor:
        """Explicit in-batch negatives: row i holds every other batch item, ``[B, B - 1]``.

        For pairwise/pointwise losses (BPR, BCE) that take negatives as a matrix; the softmax
        losses do not need it.
        """
        b = items.numel()
        idx = torch.arange(b, device=items.device)
        off_diag = idx.unsqueeze(1) != idx.unsqueeze(0)
        return items.reshape(1, b).expand(b, b)[off_diag].view(b, b - 1)


class HardNegativeSampler:
    """Mines hard negatives with the current model (no gradient).

    Default mode: draw ``n_candidates`` uniform non-positive candidates per user, score them
    with ``score_fn(users [B], items [B, C]) -> [B, C]``, return the ``n`` highest-scoring
    distinct ones (see :meth:`mine`).

    ``from_topk=True`` (small catalogues): score the whole catalogue, keep each user's top
    ``n_candidates`` non-positive items (K), and return ``n`` of them drawn uniformly without
    replacement (``n == K`` returns exactly the top-K). Drawing inside the top-K rather than
    always taking the top-n limits the damage of false negatives, which crowd the very top.

    Args:
        score_fn: model scores for (user, item) pairs; called under ``torch.no_grad()``.
        n_items: catalogue size (optional when ``exclude`` is given).
        n_candidates: uniform candidates per user, or K in ``from_topk`` mode.
        n: hard negatives returned per user.
        exclude: positives never to return (csr matrix or :class:`PositiveSet`).
        from_topk: mine from the full ranking's top-K instead of uniform candidates.
        device: as for :class:`UniformSampler`.
        seed: as for :class:`UniformSampler`.
        generator: as for :class:`UniformSampler`.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        n_items: int | None = None,
        n_candidates: int = 64,
        n: int = 1,
        exclude: sp.spmatrix | sp.sparray | PositiveSet | None = None,
        from_topk: bool = False,
        device: str | torch.device = "cpu",
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if n_items is None:
            if exclude is None:
                raise ValueError("give n_items or exclude")
            n_items = exclude.n_items if isinstance(exclude, PositiveSet) else exclude.shape[1]
        if not 0 < n <= n_candidates:
            raise ValueError(f"need 0 < n <= n_candidates, got n={n}, n_candidates={n_candidates}")
        self.score_fn = score_fn
        self.n_items = int(n_items)
        self.n_candidates = int(n_candidates)
        self.n = int(n)
        self.from_topk = bool(from_topk)
        self.device = torch.device(device)
        self.generator = _make_generator(seed, generator, self.device)
        # the uniform sampler draws the candidates and owns the positives (exclusion, checks)
        self._uniform = UniformSampler(self.n_items, exclude, self.device, generator=self.generator)
        self.positives = self._uniform.positives

    @torch.no_grad()
    def sample(
        self, users: Tensor, n: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Hard negatives ``[B, n]`` (defaults to the constructor's ``n``), sorted by score
        (descending) in the default mode."""
        n = self.n if n is None else int(n)
        users = torch.as_tensor(users, device=self.device).long().reshape(-1)
        gen = generator if generator is not None else self.generator
        if not self.from_topk:
            candidates = self._uniform.sample(users, self.n_candidates, generator=gen)
            return self.mine(users, candidates, n)
        return self._from_topk(users, n, gen)

    __call__ = sample

    @torch.no_grad()
    def mine(self, users: Tensor, candidates: Tensor, n: int) -> Tensor:
        """The ``n`` highest-scoring distinct non-positive items among ``candidates``.

        Args:
            users: ``[B]``.
            candidates: ``[B, C]`` item indices (may contain positives and repeats).
            n: how many to return per user.

        Returns:
            LongTensor ``[B, n]``, best first. Repeated candidates are used only if a row has
            fewer than ``n`` distinct non-positives; positives never.

        Raises:
            ValueError: a row has fewer than ``n`` non-positive candidates.
        """
        users = torch.as_tensor(users, device=self.device).long().reshape(-1)
        candidates = torch.as_tensor(candidates, device=self.device).long()
        scores = self.score_fn(users, candidates).float()
        # repeats of an item: keep the first copy, demote the others below every real score
        sorted_c, order = candidates.sort(dim=1, stable=True)
        dup_sorted = torch.zeros_like(sorted_c, dtype=torch.bool)
        dup_sorted[:, 1:] = sorted_c[:, 1:] == sorted_c[:, :-1]
        dup = torch.zeros_like(dup_sorted).scatter(1, order, dup_sorted)
        scores = scores.masked_fill(dup, torch.finfo(torch.float32).min)
        if self.positives is not None:
            pos = self.positives.contains(users.unsqueeze(1), candidates)
            if bool(((~pos).sum(1) < n).any()):
                raise ValueError(f"some rows have fewer than n={n} non-positive candidates")
            scores = scores.masked_fill(pos, float("-inf"))
        top = scores.topk(n, dim=1).indices
        return candidates.gather(1, top)

    def _from_topk(self, users: Tensor, n: int, gen: torch.Generator | None) -> Tensor:
        k = self.n_candidates
        if k > self.n_items:
            raise ValueError(f"n_candidates={k} exceeds n_items={self.n_items}")
        b = users.numel()
        all_items = torch.arange(self.n_items, device=self.device).unsqueeze(0).expand(b, -1)
        scores = self.score_fn(users, all_items).float()
        if self.positives is not None:
            if bool((self.n_items - self.positives.degree[users] < k).any()):
                raise ValueError(f"some users have fewer than n_candidates={k} non-positive items")
            scores = scores.masked_fill(
                self.positives.contains(users.unsqueeze(1), all_items), float("-inf")
            )
        top_k = scores.topk(k, dim=1).indices  # item index == column index
        if n == k:
            return top_k
        # uniform choice of n out of K without replacement: the n largest of K random keys
        keys = torch.rand(b, k, device=self.device, generator=gen)
        return top_k.gather(1, keys.topk(n, dim=1).indices)
