"""Building blocks shared by every model family (the one MLP builder)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["MLP"]


class MLP(nn.Sequential):
    """``in_dim -> hidden[0] -> ... -> hidden[-1]``, each Linear followed by the activation and
    dropout; ``out_dim`` appends a final linear layer (a logit head or a tower's output), itself
    followed by the activation when ``final_activation``.

    The layer indices are those of a plain ``nn.Sequential`` of the same layers, so saved weights
    of the towers built before this class keep loading.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int | None = None,
                 dropout: float = 0.0, activation: type[nn.Module] = nn.ReLU,
                 final_activation: bool = False) -> None:
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(in_dim, h), activation()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = h
        if out_dim is not None:
            layers.append(nn.Linear(in_dim, out_dim))
            if final_activation:
                layers.append(activation())
        super().__init__(*layers)
        self.out_dim = out_dim if out_dim is not None else in_dim
