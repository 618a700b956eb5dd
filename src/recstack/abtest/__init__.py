"""A/B experiments: deterministic traffic assignment and the statistics that decide them."""

from recstack.abtest.analysis import (
    VariantStats,
    analyze,
    compare,
    ips_estimate,
    read_log,
    sample_ratio_mismatch,
)
from recstack.abtest.assign import assign_variant, bucket

__all__ = ["VariantStats", "analyze", "compare", "ips_estimate", "read_log", "sample_ratio_mismatch",
           "assign_variant", "bucket"]
