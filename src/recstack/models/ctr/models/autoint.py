"""AutoInt (Song et al., CIKM 2019, Figures 1 and 3).

    e_m = field embeddings (a number x_m as x_m * v_m)
    interacting layer, per head h:  alpha_mk = softmax_k(<W_Q e_m, W_K e_k>)
                                    e~_m^h   = sum_k alpha_mk W_V e_k
                                    e_m^Res  = ReLU([e~_m^1, ..., e~_m^H] + W_Res e_m)
    y = sigmoid(w^T [e_1^Res, ..., e_M^Res] + b)

`hidden` non-empty adds the paper's AutoInt+ deep branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, FieldEmbedder
from recstack.models.layers import MLP


class InteractingLayer(nn.Module):
    """Multi-head self-attention over fields with a residual projection and ReLU."""

    def __init__(self, in_dim: int, heads: int, att_dim: int) -> None:
        super().__init__()
        self.heads, self.att_dim = heads, att_dim
        self.qkv = nn.Linear(in_dim, 3 * heads * att_dim, bias=False)
        self.res = nn.Linear(in_dim, heads * att_dim, bias=False)

    def forward(self, e: Tensor) -> Tensor:
        b, m, _ = e.shape
        q, k, v = self.qkv(e).reshape(b, m, 3, self.heads, self.att_dim).permute(2, 0, 3, 1, 4)
        alpha = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # [B, H, m, m]
        out = (alpha @ v).transpose(1, 2).reshape(b, m, -1)  # heads concatenated
        return torch.relu(out + self.res(e))


@dataclass
class AutoIntConfig(CTRConfig):
    layers: int = 3
    heads: int = 2
    att_dim: int = 16
    hidden: tuple[int, ...] = ()  # non-empty: AutoInt+


class AutoIntNet(CTRModule):

    def __init__(self, layout: Layout, cfg: AutoIntConfig) -> None:
        super().__init__(layout, cfg)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std)
        dims = [cfg.dim] + [cfg.heads * cfg.att_dim] * cfg.layers
        self.interacting = nn.Sequential(*(InteractingLayer(dims[i], cfg.heads, cfg.att_dim)
                                           for i in range(cfg.layers)))
        self.out = nn.Linear(self.embed.n_fields * dims[-1], 1)
        self.deep = MLP(self.embed.n_fields * cfg.dim, cfg.hidden, 1, cfg.dropout) if cfg.hidden else None

    def forward(self, batch: Batch) -> Tensor:
        e = self.embed(batch)
        y = self.out(self.interacting(e).flatten(1)).squeeze(1)
        if self.deep is not None:
            y = y + self.deep(e.flatten(1)).squeeze(1)
        return y


class AutoInt(CTRModel):
    """The autoint estimator: AutoIntConfig hyper-parameters, AutoIntNet network, CTRModel verbs."""

    name = "autoint"
    config_cls = AutoIntConfig
    net_cls = AutoIntNet
