"""Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018).

A user is their row x_u of the binary interaction matrix. The encoder maps the L2-normalised,
dropped-out row to a Gaussian q(z | x_u) = N(mu, diag(sigma^2)); the decoder maps z to logits
over all items, whose softmax pi(z) is the multinomial of the user's clicks:

    x_u -> normalise -> dropout -> [I -> 600 -> 2*200] (tanh) -> mu, log sigma^2
    z = mu + sigma * eps (training) or mu (scoring) -> [200 -> 600 -> I] (tanh) -> logits

    loss = mean over the users of a batch of
           -sum_i x_ui log pi_i(z) + beta * KL(q(z | x_u) || N(0, I))

beta is annealed as in the authors' code: at the t-th gradient step (t = 0, 1, ...) it is
min(anneal_cap, t * anneal_step), i.e. it grows linearly by anneal_step a step (the code's
1 / total_anneal_steps, 1 / 200,000) and stops at anneal_cap. The step count is a buffer of the
module, so checkpoints resume the schedule exactly, and a refit for the same number of epochs
on the same users repeats it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.dataset import Interactions
from recstack.models.neural import NeuralRecommender


class MultVAEModule(nn.Module):
    """The boxes: input dropout, encoder MLP, decoder MLP; plus the annealing step counter."""

    def __init__(self, n_items: int, hidden: int = 600, latent: int = 200, dropout: float = 0.5) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Sequential(nn.Linear(n_items, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, n_items))
        # gradient steps taken so far; a buffer so checkpoints resume the annealing exactly
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        for layer in [*self.encoder, *self.decoder]:
            if isinstance(layer, nn.Linear):  # authors' code: Xavier (Glorot uniform) weights,
                nn.init.xavier_uniform_(layer.weight)  # truncated N(0, 0.001^2) biases
                nn.init.trunc_normal_(layer.bias, std=0.001, a=-0.002, b=0.002)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary rows x [B, I] -> (mu, logvar) [B, d] in float32."""
        h = self.drop(F.normalize(x.float(), dim=1))  # L2 norm, then dropout (scaled by 1/(1-p))
        mu, logvar = self.encoder(h).float().chunk(2, dim=1)
        return mu, logvar

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary rows x [B, I] -> (logits [B, I], mu [B, d], logvar [B, d]).

        Training mode samples z = mu + exp(logvar / 2) * eps (the reparameterisation trick);
        eval mode decodes z = mu, so scores are deterministic."""
        mu, logvar = self.encode(x)
        z = mu
        if self.training:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def dense_rows(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, n_cols: int,
               max_nnz: int | None = None) -> torch.Tensor:
    """Binary dense [len(rows), n_cols] float32 of CSR rows `rows`, all on one device, no Python loop.

    `rows` must be distinct. With `max_nnz` (an upper bound of the rows' stored entries, known on
    the host, e.g. the sum of the `len(rows)` longest rows) there is no host sync at all: the
    entries are laid out in a buffer of that size and the unused tail writes to a spare slot.
    Without it, the exact count is read back once (one sync)."""
    start, end = indptr[rows], indptr[rows + 1]
    lens = end - start
    cum = torch.cumsum(lens, 0)
    n_rows = len(rows)
    x = torch.zeros(n_rows * n_cols + 1, device=rows.device)  # + 1: the spare slot
    if max_nnz is None:
        nnz = int(cum[-1]) if n_rows else 0  # the one host sync
        r = torch.repeat_interleave(torch.arange(n_rows, device=rows.device), lens, output_size=nnz)
        pos = torch.arange(nnz, device=rows.device)
        flat = r * n_cols + indices[start[r] + pos - (cum[r] - lens[r])]
    else:
        pos = torch.arange(max_nnz, device=rows.device)
        r = torch.searchsorted(cum, pos, right=True)  # the row of entry `pos` (n_rows past the end)
        used = r < n_rows
        r = r.clamp(max=max(n_rows - 1, 0))
        src = (start[r] + pos - (cum[r] - lens[r])).clamp(max=max(len(indices) - 1, 0))
        flat = torch.where(used, r * n_cols + indices[src], n_rows * n_cols)
    x[flat] = 1.0
    return x[: n_rows * n_cols].view(n_rows, n_cols)


class MultVAE(NeuralRecommender):
    """Mult-VAE: one training example per user, fold-in scoring from the training history.

    The paper's model and training (ML-20M notebook of the authors' code): [I-600-200-600-I]
    with tanh, dropout 0.5 on the L2-normalised input, Xavier weights and truncated
    N(0, 0.001^2) biases, Adam lr 1e-3 without weight decay, 500 users a batch, up to 200
    epochs with the best epoch kept by validation. The KL weight beta follows the paper's
    linear schedule min(anneal_cap, t * anneal_step); the paper picks the cap on validation
    (0.2 on ML-20M, reached after 40,000 steps at 1 / 200,000 a step). The defaults here were
    chosen the same way, on validation (benchmarks/grids/multvae.yaml, a holdout of Gowalla's
    train part): beta = 1 from the second step (anneal_cap 1, anneal_step 1), i.e. the plain
    ELBO, which the paper's Mult-VAE^PR relaxes; with a few hundred batches an epoch the
    paper's slope leaves beta near 0 while the model overfits within 20 epochs. For the
    paper's ML-20M schedule: ``anneal_cap=0.2, anneal_step=5e-6``.
    Validation: NDCG@20 every 5 epochs, stopping after 10 checks (50 epochs) without a gain,
    where the authors check NDCG@100 every epoch and always run 200.

    Args:
        hidden: width of the encoder's and decoder's hidden layer (paper: 600).
        latent: size of z (paper: 200).
        dropout: dropout probability on the normalised input (paper: 0.5).
        anneal_cap: the largest beta (paper, ML-20M: 0.2; default 1.0, chosen on validation).
        anneal_step: beta's increase per gradient step (paper's code: 1 / total_anneal_steps
            = 1 / 200,000); a value >= anneal_cap puts beta at anneal_cap from the second step
            (default 1.0, chosen on validation).
    """

    name = "multvae"

    def __init__(self, hidden: int = 600, latent: int = 200, dropout: float = 0.5,
                 anneal_cap: float = 1.0, anneal_step: float = 1.0,
                 device: str = "auto", **train: Any) -> None:
        super().__init__(device, **train)
        self.hidden, self.latent, self.dropout = hidden, latent, dropout
        self.anneal_cap, self.anneal_step = anneal_cap, anneal_step

    # paper: Adam lr 1e-3 (no weight decay for the VAE: lam=0.0), 500 users per batch, 200
    # epochs, the best epoch by validation NDCG; no learning-rate schedule. Validation every 5
    # epochs with a patience of 10 checks: never stops within 50 epochs of the best one
    _defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 500, "epochs": 200, "weight_decay": 0.0,
                                           "monitor": "ndcg@20", "eval_every": 5, "patience": 10,
                                           "plateau_factor": 1.0}

    def _build(self, meta: dict[str, Any]) -> nn.Module:
        return MultVAEModule(meta["n_items"], self.hidden, self.latent, self.dropout)

    def _examples(self, data: Interactions) -> dict[str, torch.Tensor]:
        self._history_to_device()
        lens = np.diff(self.seen_.indptr)
        users = np.flatnonzero(lens > 0)  # an empty row has nothing to fit
        # the most entries a batch of distinct users can hold: no host sync to densify a batch
        self.max_batch_nnz_ = int(np.sort(lens)[::-1][: self.train_config.batch_size].sum())
        return {"user": torch.as_tensor(users, device=self.device_)}

    def _history_to_device(self) -> None:
        """The training CSR (self.seen_) as device tensors, for densifying user batches."""
        self.indptr_ = torch.as_tensor(self.seen_.indptr.astype(np.int64), device=self.device_)
        self.indices_ = torch.as_tensor(self.seen_.indices.astype(np.int64), device=self.device_)

    def beta(self) -> torch.Tensor:
        """The KL weight of the next step, min(anneal_cap, steps * anneal_step), a 0-d tensor."""
        return (self.module_.steps.double() * self.anneal_step).clamp(max=self.anneal_cap).float()

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        m = self.module_
        users = batch["user"]
        bound = getattr(self, "max_batch_nnz_", None) if len(users) <= self.train_config.batch_size else None
        x = dense_rows(self.indptr_, self.indices_, users, self.n_items_, bound)
        logits, mu, logvar = m(x, generator)
        # the softmax over all items in float32, also under bf16 autocast
        nll = -(F.log_softmax(logits.float(), dim=1) * x).sum(1)  # multinomial log-likelihood
        kl = 0.5 * (torch.exp(logvar) + mu**2 - 1.0 - logvar).sum(1)
        beta = self.beta()
        if m.training:
            m.steps += 1  # the step this loss is for; the next one sees beta + anneal_step
        return (nll + beta * kl).mean()

    # ---- scoring: fold-in from the training history --------------------------------------------
    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Decoder logits from each user's training row (no dropout, z = mu)."""
        self.module_.eval()
        x = dense_rows(self.indptr_, self.indices_, users.to(self.device_).long(), self.n_items_)
        return self.module_(x)[0].float()

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        super()._load_state(state)
        self._history_to_device()
