"""Every ranking model, one per file: ``XConfig`` (hyper-parameters), ``XNet`` (the network),
``X`` (the estimator)."""

from recstack.models.ctr.models.autoint import AutoInt, AutoIntConfig, AutoIntNet
from recstack.models.ctr.models.dcn import DCN, DCNConfig, DCNNet
from recstack.models.ctr.models.dcnv2 import DCNv2, DCNv2Config, DCNv2Net
from recstack.models.ctr.models.deepfm import DeepFM, DeepFMConfig, DeepFMNet
from recstack.models.ctr.models.din import DIN, DINConfig, DINNet
from recstack.models.ctr.models.dlrm import DLRM, DLRMConfig, DLRMNet
from recstack.models.ctr.models.fm import FM, FMConfig, FMNet
from recstack.models.ctr.models.lr import LR, LRConfig, LRNet
from recstack.models.ctr.models.mmoe import MMoE, MMoEConfig, MMoENet
from recstack.models.ctr.models.wide_deep import WideDeep, WideDeepConfig, WideDeepNet
from recstack.models.ctr.models.xdeepfm import XDeepFM, XDeepFMConfig, XDeepFMNet
from recstack.models.ctr.models.youtube_rank import YouTubeRank, YouTubeRankConfig, YouTubeRankNet

__all__ = [
    "AutoInt", "AutoIntConfig", "AutoIntNet",
    "DCN", "DCNConfig", "DCNNet",
    "DCNv2", "DCNv2Config", "DCNv2Net",
    "DeepFM", "DeepFMConfig", "DeepFMNet",
    "DIN", "DINConfig", "DINNet",
    "DLRM", "DLRMConfig", "DLRMNet",
    "FM", "FMConfig", "FMNet",
    "LR", "LRConfig", "LRNet",
    "MMoE", "MMoEConfig", "MMoENet",
    "WideDeep", "WideDeepConfig", "WideDeepNet",
    "XDeepFM", "XDeepFMConfig", "XDeepFMNet",
    "YouTubeRank", "YouTubeRankConfig", "YouTubeRankNet",
]
