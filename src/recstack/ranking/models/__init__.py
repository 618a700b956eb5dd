"""Every ranking model, one per file; importing this package registers them."""

from recstack.ranking.models.autoint import AutoInt, AutoIntConfig
from recstack.ranking.models.dcn import DCN, DCNConfig
from recstack.ranking.models.dcnv2 import DCNv2, DCNv2Config
from recstack.ranking.models.deepfm import DeepFM, DeepFMConfig
from recstack.ranking.models.din import DIN, DINConfig
from recstack.ranking.models.dlrm import DLRM, DLRMConfig
from recstack.ranking.models.fm import FM, FMConfig
from recstack.ranking.models.lr import LR, LRConfig
from recstack.ranking.models.mmoe import MMoE, MMoEConfig
from recstack.ranking.models.wide_deep import WideDeep, WideDeepConfig
from recstack.ranking.models.xdeepfm import XDeepFM, XDeepFMConfig
from recstack.ranking.models.youtube_rank import YouTubeRank, YouTubeRankConfig

__all__ = [
    "LR", "LRConfig", "FM", "FMConfig", "WideDeep", "WideDeepConfig", "DeepFM", "DeepFMConfig",
    "DCN", "DCNConfig", "DCNv2", "DCNv2Config", "XDeepFM", "XDeepFMConfig", "AutoInt",
    "AutoIntConfig", "DLRM", "DLRMConfig", "MMoE", "MMoEConfig", "DIN", "DINConfig",
    "YouTubeRank", "YouTubeRankConfig",
]
