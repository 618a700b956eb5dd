"""BSARec (Shin et al., AAAI 2024, "An Attentive Inductive Bias for Sequential Recommendation
beyond the Self-Attention").

    E_i (item embedding) + P_t (learned position) -> layer norm -> dropout
      -> n_blocks x [ alpha * DSP(x) + (1 - alpha) * GSP(x)  ->  feed-forward ]
    score of item i after position t:  r_{i,t} = <F_t, E_i>   (the input item table, shared)

    DSP (the inductive bias, a Fourier filter over the sequence axis):
        low  = irfft(rfft(x) with the frequencies above the c lowest set to 0)
        high = x - low
        DSP(x) = LN(x + dropout(low + beta^2 * high))     beta: a learned vector (one per channel)
    GSP = causal multi-head self-attention, LN(x + dropout(W_o attention(x)))
    feed-forward: LN(x + dropout(W_2 GELU(W_1 x)))         (4 x dim inner size)

Every sublayer is post-norm with residual, as in the authors' code (built on FMLP-Rec's); the
attention is causal, padding keys are hidden. ``alpha`` balances the filter against attention;
``c`` is the paper's cut-off: the lowest ``c // 2 + 1`` rFFT frequencies pass as "low". Defaults
are the paper's (dim 64, 2 blocks, 1 head, dropout 0.5, Adam lr 5e-4, batch 256) with alpha 0.9 and
c 3, chosen on Beauty and LastFM validation (benchmarks/grids/bsarec.yaml; the paper's Beauty
values are 0.7 and 5); the loss is full cross-entropy over the catalogue at every position of
the sequence (the same objective as one sample per prefix).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from recstack.models.sequential.base import SequentialRecommender
from recstack.models.sequential.layers import ItemEmbedding, SelfAttention, attention_mask


class FrequencyFilter(nn.Module):
    """DSP: the sequence split into its lowest frequencies and the rest, the rest rescaled by a
    learned ``beta^2`` per channel, then a residual + layer norm."""

    def __init__(self, dim: int, c: int, dropout: float) -> None:
        super().__init__()
        self.n_low = c // 2 + 1
        self.sqrt_beta = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        # the FFT runs in fp32 (cuFFT's half precision needs power-of-two lengths)
        spectrum = torch.fft.rfft(x.float(), dim=1, norm="ortho")
        spectrum[:, self.n_low :] = 0
        low = torch.fft.irfft(spectrum, n=length, dim=1, norm="ortho").to(x.dtype)
        mixed = low + self.sqrt_beta.square() * (x - low)
        return self.norm(x + self.dropout(mixed))


class AttentionSublayer(nn.Module):
    """GSP: multi-head self-attention, output projection, dropout, residual + layer norm."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.attn(x, x, allowed)))


class BSARecBlock(nn.Module):
    """``alpha * DSP + (1 - alpha) * GSP`` then the feed-forward sublayer."""

    def __init__(self, dim: int, n_heads: int, dropout: float, alpha: float, c: int) -> None:
        super().__init__()
        self.alpha = alpha
        self.filter = FrequencyFilter(dim, c, dropout)
        self.attention = AttentionSublayer(dim, n_heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        x = self.alpha * self.filter(x) + (1.0 - self.alpha) * self.attention(x, allowed)
        return self.ffn_norm(x + self.ffn(x))


class BSARecModule(nn.Module):
    """The boxes: item and position tables, embedding norm, the BSARec blocks."""

    def __init__(self, n_items: int, max_len: int, dim: int, n_blocks: int, n_heads: int, dropout: float,
                 alpha: float, c: int, init_std: float, n_attributes: int = 0, attr_width: int = 0) -> None:
        super().__init__()
        self.item_emb = ItemEmbedding(n_items, dim, n_attributes, attr_width, init_std)
        self.position = nn.Embedding(max_len, dim)
        self.emb_norm = nn.LayerNorm(dim, eps=1e-12)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(BSARecBlock(dim, n_heads, dropout, alpha, c) for _ in range(n_blocks))
        # the authors' initialisation: every linear and embedding weight N(0, init_std), biases 0
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=init_std)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.position.weight, std=init_std)

    def forward(self, seq: Tensor, user: Tensor | None = None, last_only: bool = False) -> Tensor:
        """``[B, L]`` left-padded table indices -> ``[B, L, d]`` (``[B, 1, d]`` if `last_only`)."""
        length = seq.shape[1]
        x = self.item_emb(seq) + self.position.weight[-length:]
        x = self.emb_dropout(self.emb_norm(x))
        allowed = attention_mask(seq, causal=True)
        for block in self.blocks:
            x = block(x, allowed)
        return x[:, -1:] if last_only else x

    def output_items(self) -> tuple[Tensor, None]:
        return self.item_emb.items(), None


class BSARec(SequentialRecommender):
    """BSARec (see the module docstring and `SequentialRecommender` for the shared arguments).

    Args:
        n_blocks: BSARec blocks.
        n_heads: attention heads per block.
        alpha: weight of the frequency filter against self-attention (0 = SASRec-like attention
            only, 1 = the filter only).
        c: frequency cut-off: the ``c // 2 + 1`` lowest rFFT frequencies are the "low" part.
    """

    name = "bsarec"
    # the paper's optimisation: Adam 5e-4, batch 256, up to 200 epochs, early stopping on the
    # validation item's NDCG@10 with patience 10
    _defaults: ClassVar[dict[str, Any]] = {**SequentialRecommender._defaults, "lr": 5e-4, "batch_size": 256}

    def __init__(self, max_len: int = 50, dim: int = 64, n_blocks: int = 2, n_heads: int = 1,
                 dropout: float = 0.5, alpha: float = 0.9, c: int = 3,
                 loss: Literal["ce", "sampled", "bce"] = "ce", n_negatives: int = 256,
                 sampler: Literal["uniform", "popularity", "in_batch"] = "uniform", logq: bool = True,
                 use_attributes: bool = False, all_windows: bool = True, init_std: float = 0.02,
                 device: str = "auto", **train: Any) -> None:
        super().__init__(max_len, dim, dropout, loss, n_negatives, sampler, logq, use_attributes,
                         all_windows, init_std, device, **train)
        self.n_blocks, self.n_heads, self.alpha, self.c = n_blocks, n_heads, alpha, c

    def _make_module(self, meta: dict[str, Any]) -> nn.Module:
        return BSARecModule(meta["n_items"], self.max_len, self.dim, self.n_blocks, self.n_heads, self.dropout,
                            self.alpha, self.c, self.init_std, meta["n_attributes"], meta["attr_width"])
