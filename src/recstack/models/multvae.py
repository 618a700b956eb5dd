"""Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018).

A user is their row x_u of the binary interaction matrix. The encoder maps the L2-normalised,
dropped-out row to a Gaussian q(z | x_u) = N(mu, diag(sigma^2)); the decoder maps z to logits
over all items, whose softmax pi(z) is the multinomial of the user's clicks:

    x_u -> normalise -> dropout -> [I -> 600 -> 2*200] (tanh) -> mu, log sigma^2
    z = mu + sigma * eps (training) or mu (scoring) -> [200 -> 600 -> I] (tanh) -> logits

    loss(u) = -sum_i x_ui log pi_i(z) + beta * KL(q(z | x_u) || N(0, I))

beta is annealed: it grows linearly by `anneal_step` per gradient step up to `anneal_cap`.
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
            if isinstance(layer, nn.Linear):  # paper: Xavier weights, N(0, 0.001) biases
                nn.init.xavier_uniform_(layer.weight)
                nn.init.normal_(layer.bias, std=0.001)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary rows x [B, I] -> (logits [B, I], mu [B, d], logvar [B, d])."""
        h = self.drop(F.normalize(x, dim=1))  # L2 norm: long and short histories on one scale
        mu, logvar = self.encoder(h).chunk(2, dim=1)
        z = mu
        if self.training:  # reparameterisation trick; scoring uses the mean
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def dense_rows(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Binary dense [len(rows), n_cols] float32 of CSR rows `rows`, all on one device, no Python loop."""
    start, end = indptr[rows], indptr[rows + 1]
    lens = end - start
    nnz = int(lens.sum())  # the one host sync: output sizes of the repeats below

    def repeat(v: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(v, lens, output_size=nnz)

    r = repeat(torch.arange(len(rows), device=rows.device))
    offset = torch.arange(nnz, device=rows.device) - repeat(torch.cumsum(lens, 0) - lens)  # rank in row
    x = torch.zeros((len(rows), n_cols), device=rows.device)
    x[r, indices[repeat(start) + offset]] = 1.0
    return x


class MultVAE(NeuralRecommender):
    """Mult-VAE^PR: one training example per user, fold-in scoring from the training history.

    Args:
        hidden: width of the encoder's and decoder's hidden layer (paper: 600).
        latent: size of z (paper: 200).
        dropout: input dropout probability (paper: 0.5).
        anneal_cap: the largest beta (paper: 0.2).
        anneal_step: beta increase per gradient step (paper: 1 / 200,000, i.e. beta reaches 1
            after 200k updates; with few users per epoch, raise it or beta stays near 0).
    """

    name = "multvae"

    def __init__(self, hidden: int = 600, latent: int = 200, dropout: float = 0.5,
                 anneal_cap: float = 0.2, anneal_step: float = 1 / 200_000,
                 device: str = "auto", **train: Any) -> None:
        super().__init__(device, **train)
        self.hidden, self.latent, self.dropout = hidden, latent, dropout
        self.anneal_cap, self.anneal_step = anneal_cap, anneal_step

    # paper: Adam lr 1e-3, 500 users per batch, 200 epochs, model selection on NDCG@100;
    # an epoch is only a few steps on small data, so early stopping needs a long patience
    _defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 500, "epochs": 200, "monitor": "ndcg@100",
                                           "patience": 20, "plateau_factor": 1.0}

    def _build(self, meta: dict[str, Any]) -> nn.Module:
        return MultVAEModule(meta["n_items"], self.hidden, self.latent, self.dropout)

    def _examples(self, data: Interactions) -> dict[str, torch.Tensor]:
        self._history_to_device()
        users = np.flatnonzero(np.diff(self.seen_.indptr) > 0)  # an empty row has nothing to fit
        return {"user": torch.as_tensor(users, device=self.device_)}

    def _history_to_device(self) -> None:
        """The training CSR (self.seen_) as device tensors, for densifying user batches."""
        self.indptr_ = torch.as_tensor(self.seen_.indptr.astype(np.int64), device=self.device_)
        self.indices_ = torch.as_tensor(self.seen_.indices.astype(np.int64), device=self.device_)

    def beta(self) -> torch.Tensor:
        """The current KL weight min(anneal_cap, steps * anneal_step), a 0-d tensor."""
        return (self.module_.steps * self.anneal_step).clamp(max=self.anneal_cap)

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        m = self.module_
        x = dense_rows(self.indptr_, self.indices_, batch["user"], self.n_items_)
        logits, mu, logvar = m(x, generator)
        mu, logvar = mu.float(), logvar.float()
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
