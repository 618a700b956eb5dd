"""Training utilities: negative samplers (losses live in :mod:`recstack.losses`)."""

from recstack.training.samplers import (
    HardNegativeSampler,
    InBatchSampler,
    PopularitySampler,
    PositiveSet,
    UniformSampler,
)

__all__ = [
    "HardNegativeSampler",
    "InBatchSampler",
    "PopularitySampler",
    "PositiveSet",
    "UniformSampler",
]
