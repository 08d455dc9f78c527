"""Embedding layers: categorical indices [B, F] -> vectors [B, F, dim].

Every layer is registered under a short name (``full`` here; the hashing family in
``baselines/embeddings/``, BH and AMTL in ``methods/model_deepening/``), honours the training contract of ``EmbeddingLayer`` (a penalty on
the vectors it looked up, optional sparse gradients) and reports two sizes: ``num_parameters()`` (what training
holds) and ``stored_bytes()`` (what a server would hold, which differs for masked or quantised
tables). Any model runs with any embedding layer, because models only see this interface.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from repro.data.featuremap import FeatureMap
from repro.registry import EMBEDDINGS, register_embedding


class EmbeddingLayer(nn.Module):
    """Base class. Subclasses set ``self.dim`` and implement ``forward``.

    The training contract every layer honours (the trainer relies on nothing else):

    - **Penalty on what was looked up.** In training mode (``self.training`` and autograd on)
      ``forward`` passes the vectors it returns, and the categorical indices they came from,
      through ``self.remember(out, cat)``; ``penalty()`` returns the L2 of everything remembered
      since the last ``forget()``, and the trainer adds ``train.embedding_l2 * penalty()`` to the
      loss. Its gradient touches only the rows (or codebook entries, hash buckets, ...) this batch
      used: a row absent from the batch is left exactly as it is, and sparse updates stay possible.
      Coupled weight decay on the whole table did the opposite (Adam turns wd * theta into a
      full-size step for every unseen row, at the cost of a dense update).
      **Scaling (``by="frequency"``, the default): mini-batch-aware L2** (Zhou et al., DIN, KDD
      2018, sec. 4.3.1): an occurrence of value v is weighted by N / n_v (N training rows, n_v the
      value's training count, from the data contract's train-only frequencies), so over an epoch a
      value's penalty adds up to the same lambda * ||e_v||^2 whatever its frequency: in expectation
      it is the plain full-table L2 lambda * ||E||^2 per step (FuxiCTR's ``embedding_regularizer``
      semantics), applied lazily, only when the value is in the batch. Against its data gradient,
      which grows with n_v, the pull is strongest on the rare values that a model would otherwise
      memorise. ``by="occurrence"`` weights every occurrence 1 (a per-example prior whose ratio to
      the data gradient is the same for head and tail values): measured on the default world, it
      did not stop DeepFM from overfitting its ID embeddings after epoch 1 even at lambda = 0.1.
      Both are computed from the layer's output and input indices alone, so any layer (hashing,
      QR, quantised) can honour the contract; padding (index 0) outputs are zero and add nothing.
    - **Sparse gradients, optionally.** A layer that can produce sparse gradients sets
      ``supports_sparse_grad = True``, honours ``self.sparse_grad`` (set by the trainer before
      training) and lists the parameters whose gradients are then sparse in
      ``sparse_parameters()``; those go to a sparse optimizer (``SparseAdam``), every other
      parameter of the layer to the dense one. Layers that cannot, simply keep the defaults.
    - **Sizes**: ``num_parameters()`` (what training holds) and ``stored_bytes()`` (what a server
      would hold), and optionally ``bytes_by_field()``, the stored bytes per categorical field.
    - **Inputs**: ``forward(cat, raw=None)``; ``cat`` [B, F] are the vocabulary indices (the layer is
      built from the feature map, which carries the train-only ``frequencies``). A layer that hashes
      raw values sets ``uses_raw_ids = True`` and then also gets ``raw`` [B, F], the raw-value
      hashes (``repro.data.prepare.raw_hash``), so values outside the vocabulary keep their identity.
    - **First-order weights**: a model's per-value scalar weights (``repro.layers.FirstOrder``) are
      built by the same scheme through ``first_order(feature_map, cfg)``, by default the layer
      at ``dim=1`` with zero initialisation, so a compressed embedding compresses every per-value
      parameter. A scheme overrides it where dim 1 or a zero start does not work for it.

    Find every embedding layer of a model with ``embedding_layers(model)`` (it includes the
    dim-1 first-order table of ``repro.layers.FirstOrder``).
    """

    dim: int
    supports_sparse_grad: bool = False
    uses_raw_ids: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.sparse_grad = False
        self._looked_up: list[tuple[torch.Tensor, torch.Tensor]] = []
        # Per-value weights of the penalty (flat over ``self.penalty_fields``); None = weight 1.
        self._value_weight: torch.Tensor | None = None
        self._value_offsets: torch.Tensor | None = None
        # The categorical fields this layer embeds, in the column order of the ``cat`` it is given.
        self.penalty_fields: list[str] = []

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def stored_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def bytes_by_field(self) -> dict[str, int] | None:
        """Stored bytes per categorical field, when the layer can attribute them (None if not)."""
        return None

    @classmethod
    def first_order(cls, feature_map: FeatureMap, cfg: "EmbeddingConfig") -> "EmbeddingLayer":
        """The scheme's table of per-value scalar weights: itself at dim 1, starting at zero."""
        return cls(feature_map, dataclasses.replace(cfg, dim=1, init_std=0.0))

    # -- the penalty contract -------------------------------------------------------------
    def remember(self, out: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """Keep ``out`` ([B, F, dim] looked-up vectors) and ``cat`` ([B, F], the indices they came
        from) for ``penalty()`` while training; returns ``out``."""
        if self.training and torch.is_grad_enabled():
            self._looked_up.append((out, cat))
        return out

    def set_frequencies(self, frequencies: dict[str, "np.ndarray"], train_rows: int, by: str = "frequency") -> None:
        """Weight the penalty per value (``by="frequency"``: N / n_v) or not (``"occurrence"``)."""
        if by == "occurrence":
            self._value_weight = self._value_offsets = None
            return
        if by != "frequency":
            raise ValueError(f"penalty scaling {by!r}: expected 'frequency' or 'occurrence'")
        missing = [f for f in self.penalty_fields if f not in frequencies]
        if missing or not self.penalty_fields:
            raise ValueError(f"{type(self).__name__}: no training frequencies for field(s) {missing or '(none declared)'}")
        counts = [torch.as_tensor(frequencies[f], dtype=torch.float64) for f in self.penalty_fields]
        sizes = torch.tensor([len(c) for c in counts])
        device = self._zero().device
        self._value_offsets = (torch.cumsum(sizes, 0) - sizes).to(device)
        self._value_weight = (float(train_rows) / torch.cat(counts).clamp(min=1.0)).float().to(device)

    def penalty(self) -> torch.Tensor:
        """L2 of the looked-up vectors since ``forget()``, / batch size, each occurrence weighted."""
        if not self._looked_up:
            return self._zero()
        total = self._zero()
        for out, cat in self._looked_up:
            sq = out.pow(2).flatten(2).sum(-1)  # [B, F]
            if self._value_weight is not None:
                sq = sq * self._value_weight[cat + self._value_offsets]
            total = total + sq.sum() / max(1, out.shape[0])
        return total

    def forget(self) -> None:
        """Drop the remembered lookups (the trainer calls this before every forward pass)."""
        self._looked_up = []

    def _zero(self) -> torch.Tensor:
        p = next(self.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)

    # -- the sparse-gradient contract -----------------------------------------------------
    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradients are sparse now (empty unless ``sparse_grad`` is honoured)."""
        return []

    def train(self, mode: bool = True) -> "EmbeddingLayer":
        self.forget()
        return super().train(mode)


def embedding_layers(model: nn.Module) -> list[EmbeddingLayer]:
    """Every embedding layer inside ``model`` (in module order, each once)."""
    return [m for m in model.modules() if isinstance(m, EmbeddingLayer)]


@dataclass
class EmbeddingConfig:
    """What every scheme's config has (each scheme's dataclass extends it)."""

    dim: int = 16
    init_std: float = 1e-2


@dataclass
class FullEmbeddingConfig(EmbeddingConfig):
    pass


@register_embedding("full", config=FullEmbeddingConfig)
class FullEmbedding(EmbeddingLayer):
    """One row per vocabulary entry of every field, in one table with per-field offsets.

    One fused table (rather than one ``nn.Embedding`` per field) turns F lookups into one gather,
    which on the CPU is the difference that matters. Index 0 (padding/missing) of every field
    maps to the zero vector, as ``padding_idx`` would (its row is masked, so it never trains).
    """

    supports_sparse_grad = True

    def __init__(self, feature_map: FeatureMap, cfg: FullEmbeddingConfig) -> None:
        super().__init__()
        self.dim = cfg.dim
        self.penalty_fields = [f.name for f in feature_map.categorical]
        sizes = torch.tensor([f.vocab_size for f in feature_map.categorical], dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.weight = nn.Parameter(torch.randn(int(sizes.sum()), cfg.dim) * cfg.init_std)
        with torch.no_grad():
            self.weight[self.offsets] = 0.0

        self._vocab = {f.name: f.vocab_size for f in feature_map.categorical}

    def forward(self, cat: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        out = nn.functional.embedding(cat + self.offsets, self.weight, sparse=self.sparse_grad)
        return self.remember(out * (cat != 0).unsqueeze(-1).to(out.dtype), cat)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.weight] if self.sparse_grad else []

    def bytes_by_field(self) -> dict[str, int]:
        return {name: n * self.dim * self.weight.element_size() for name, n in self._vocab.items()}


def build_embedding(feature_map: FeatureMap, block, first_order: bool = False) -> EmbeddingLayer:
    """Build the embedding layer named by ``block.name`` (default ``full``); with ``first_order``,
    the same scheme's table of per-value scalar weights (``EmbeddingLayer.first_order``)."""
    name = block.get("name", "full") if block is not None else "full"
    if not first_order:
        return EMBEDDINGS.build(name, block, feature_map)
    return EMBEDDINGS.get(name).factory.first_order(feature_map, EMBEDDINGS.config(name, block))
