"""DCN-V2 (Wang et al., 2021), parallel form: a full-rank cross network beside an MLP.

The paper offers stacked and parallel structures and a low-rank mixture variant; this is the
parallel full-rank form that BARS's DCNv2 rows use by default. Everything but the cross layer is
DCN's, so it subclasses it.
"""

from dataclasses import dataclass, field

from baselines.dcn import DCN
from repro.layers import CrossNetV2
from repro.registry import register_model


@dataclass
class DCNv2Config:
    cross_layers: int = 3
    hidden_units: list[int] = field(default_factory=lambda: [256, 128, 64])
    dropout: float = 0.0
    batch_norm: bool = False


@register_model("dcnv2", config=DCNv2Config)
class DCNv2(DCN):
    cross_network = CrossNetV2
