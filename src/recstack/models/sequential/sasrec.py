"""SASRec (Kang & McAuley, ICDM 2018, "Self-Attentive Sequential Recommendation").

    E_i (item embedding, x sqrt(d)) + P_t (learned position)  -> dropout
      -> n_blocks x [ causal self-attention -> point-wise feed-forward ]   (layer norms, residuals)
      -> layer norm -> F_t                                                 (one vector per position)
    score of item i after position t:  r_{i,t} = <F_t, E_i>   (the input item table, shared)

Each block follows the authors' code: the queries are layer-normalised, keys/values are not,
the residual is added to the normalised queries; then ``x = LN(x); x = x + FFN(x)``; padding
positions are zeroed after each block. Attention is causal: position t sees items 1..t only.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from recstack.models.sequential.base import SequentialRecommender
from recstack.models.sequential.layers import (
    FeedForward,
    ItemEmbedding,
    SelfAttention,
    attention_mask,
)


class SASRecBlock(nn.Module):
    """Self-attention block: LN -> causal attention (+ residual), LN -> FFN (+ residual)."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_mult: int = 1) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = FeedForward(dim, ffn_mult * dim, dropout, nn.ReLU)

    def forward(self, x: Tensor, allowed: Tensor, keep: Tensor) -> Tensor:
        q = self.attn_norm(x)
        x = q + self.attn_dropout(self.attn(q, x, allowed))
        x = self.ffn_norm(x)
        x = x + self.ffn(x)
        return x * keep


class SASRecModule(nn.Module):
    """The boxes: item table, position table, attention blocks, final layer norm."""

    def __init__(self, n_items: int, max_len: int, dim: int, n_blocks: int, n_heads: int,
                 dropout: float, init_std: float, n_attributes: int = 0, attr_width: int = 0,
                 ffn_mult: int = 1) -> None:
        super().__init__()
        self.item_emb = ItemEmbedding(n_items, dim, n_attributes, attr_width, init_std)
        self.position = nn.Embedding(max_len, dim)
        nn.init.normal_(self.position.weight, std=init_std)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(dim, n_heads, dropout, ffn_mult) for _ in range(n_blocks))
        self.final_norm = nn.LayerNorm(dim, eps=1e-8)
        self.scale = dim**0.5

    def forward(self, seq: Tensor, user: Tensor | None = None, last_only: bool = False) -> Tensor:
        """``[B, L]`` left-padded table indices -> ``[B, L, d]`` (``[B, 1, d]`` if `last_only`)."""
        length = seq.shape[1]
        keep = (seq > 0).unsqueeze(-1)
        x = self.item_emb(seq) * self.scale + self.position.weight[-length:]
        x = self.emb_dropout(x) * keep
        allowed = attention_mask(seq, causal=True)
        for block in self.blocks:
            x = block(x, allowed, keep)
        x = self.final_norm(x)
        return x[:, -1:] if last_only else x

    def output_items(self) -> tuple[Tensor, None]:
        return self.item_emb.items(), None


class SASRec(SequentialRecommender):
    """SASRec with a choice of loss (see `SequentialRecommender` for the shared arguments).

    Defaults, the same for every data set: ``max_len=50, dim=64, n_blocks=3, n_heads=2,
    ffn_mult=1, dropout=0.3, use_attributes="auto"`` (the paper's setting with 2 heads, a third
    block, dropout 0.3 and the items' attributes when the data has them: chosen on Beauty and
    LastFM validation, benchmarks/grids/sasrec.yaml, sasrec_round2.yaml and sasrec_round3.yaml),
    full cross-entropy over the catalogue
    (``loss="ce"``; ``loss="bce"`` is the paper's one-negative objective), Adam lr 1e-3, batch
    128, up to 200 epochs with early stopping on validation NDCG@10 (patience 10), training on
    every 50-item window of long sequences.

    Args:
        n_blocks: self-attention blocks.
        n_heads: attention heads per block.
        ffn_mult: inner size of the point-wise feed-forward network, in multiples of `dim`
            (1 = the paper's; Transformers usually use 4).
    """

    name = "sasrec"

    def __init__(self, max_len: int = 50, dim: int = 64, n_blocks: int = 3, n_heads: int = 2,
                 ffn_mult: int = 1, dropout: float = 0.3, loss: Literal["ce", "sampled", "bce"] = "ce", n_negatives: int = 256,
                 sampler: Literal["uniform", "popularity", "in_batch"] = "uniform", logq: bool = True, use_attributes: Literal[False, True, "auto"] = "auto",
                 all_windows: bool = True, init_std: float = 0.02, device: str = "auto",
                 **train: Any) -> None:
        super().__init__(max_len, dim, dropout, loss, n_negatives, sampler, logq, use_attributes,
                         all_windows, init_std, device, **train)
        self.n_blocks, self.n_heads, self.ffn_mult = n_blocks, n_heads, ffn_mult

    def _make_module(self, meta: dict[str, Any]) -> nn.Module:
        return SASRecModule(meta["n_items"], self.max_len, self.dim, self.n_blocks, self.n_heads,
                            self.dropout, self.init_std, meta["n_attributes"], meta["attr_width"],
                            self.ffn_mult)
