"""DCN-V2 (Wang et al., 2021), parallel form: a full-rank cross network beside an MLP.

The paper offers stacked and parallel structures and a low-rank mixture variant; this is the
parallel full-rank form that BARS's DCNv2 rows use by default. Everything but the cross layer is
DCN's, so it subclasses it.
"""

from dataclasses import dataclass

from baselines.dcn import DCN, DCNConfig
from repro.layers import CrossNetV2
from repro.registry import register_model


@dataclass
class DCNv2Config(DCNConfig):
    pass


@register_model("dcnv2", config=DCNv2Config)
class DCNv2(DCN):
    cross_network = CrossNetV2
