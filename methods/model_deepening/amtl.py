"""AMTL: adaptively-masked twins-based layer (Yan et al., CIKM 2021, arXiv 2108.11513).

Mechanism (notes ``papers.md`` sec. 2). A full-width table E (one fused [rows, d] parameter with
per-field offsets, as ``FullEmbedding``) and, behind it, a mask layer that gives every value i a
size k_i: its output keeps the first k_i dims of e_i and zeroes the rest.

    s_i = frequency features of value i (train split only)
    a_i = normalise(count_i) in [0, 1]
    z_i = a_i * hAML(s_i) + (1 - a_i) * lAML(s_i)        logits over the size choices
    p_i = softmax(z_i / T)
    t_i = onehot(argmax p_i) + (p_i - sg(p_i))           straight-through: hard forward, softmax grad
    m_i[j] = sum_{c: size_c > j} t_i[c]                  the first k_i dims are 1, the rest 0
    e'_i = m_i * e_i

The forward pass is hard in training *and* in inference (no train/infer gap); T only shapes the
gradient. ``t = onehot + (p - sg(p))`` is the notes' ``p + sg(onehot - p)`` written so that the
forward value is the one-hot vector by construction (``p - sg(p)`` is exactly 0), not by float
rounding luck, which is what lets the exported store reproduce the masked outputs bit for bit; the
gradient is the same (identity from t to p). The mask is computed once per unique (field, index) of the batch
(``torch.unique`` over the fused row ids, then gathered back), never per occurrence.

Choices where the paper (as far as the notes recover it) is silent, each a config key or a rule:

- **Frequency features s_i** (2 inputs): ``log1p(n_i) / log1p(N)`` (N = training rows, a log count
  on one scale for every field) and the in-field rank percentile ``1 - (i - 1) / n_kept`` for the
  vocabulary indices 1..n_kept (the feature map orders them by descending train count, so the index
  *is* the rank), 0 otherwise. Counts are ``feature_map.frequencies`` (train split only, pitfall 1);
  the missing index 0 and the OOV index get count 0 and rank feature 0: OOV lumps the values seen
  fewer than ``min_count`` times and unseen ones, each of which is individually rare, so it is
  treated as an unseen value (l-AML dominates), not as a frequent one by its pooled count.
- **Blend a_i** (``blend``): ``linear`` (default) = n_i / max in-field count, the notes' example;
  ``log`` = log1p(n_i) / log1p(max in-field count), which hands more of the mid-frequency values to
  h-AML. Unseen values get a_i = 0 (pure l-AML).
- **Twins** (``per_field``): one h-AML/l-AML pair per field (default; a count of 5 means something
  else for a user id than for a scene) or one pair shared by every field. Each twin is
  Linear(2, ``hidden``) -> ReLU -> Linear(hidden, C). The twins' parameters are dense (the trainer's
  dense embedding optimizer trains them) and are *not* stored after export (the masks are fixed).
- **Size choices** (``allow_zero``): {1..d} (default) or {0..d}; 0 prunes the value entirely.
- **Initialisation**: hidden layer as ``nn.Linear`` (uniform +-1/sqrt(fan_in)), output weights
  small (std 0.1/sqrt(hidden)), output bias ``init_margin`` on the full size d and 0 elsewhere, so
  the layer starts as (nearly) the identity for every value, as when it is inserted behind a
  trained table, with p still soft enough (margin 2, T 1: p_d ~ 0.5 at d = 8) for gradients to flow.
- **Temperature** (``temperature`` T0, ``temperature_final`` T1, ``anneal_steps``): T goes
  geometrically from T0 to T1 over the first ``anneal_steps`` masked training steps, then stays
  at T1; T0 = T1 = 1 (the default) is no annealing. Only the gradient depends on T.
- **What pushes k_i down.** The notes recover no explicit size regulariser: the sizes follow the
  task loss through the STE, and the trainer's lookup penalty (``train.embedding_l2`` times the
  frequency-scaled L2 of the *masked* vectors) is lower for smaller masks (d pen / d m_j =
  2 m_j e_j^2 > 0 on every kept dim). So the default adds nothing (``size_penalty: 0``). A knob
  is there for experiments: ``size_penalty`` > 0 adds ``size_penalty * mean_i(k_i / d)`` over the
  batch's unique non-missing values (each value once: memory is per value, not per occurrence;
  k_i carries the STE gradient) to ``penalty()``. The trainer scales ``penalty()`` by
  ``train.embedding_l2``, so the effective weight is ``embedding_l2 * size_penalty`` (off when the
  L2 is off). Nothing here is tuned toward the paper's "60% memory saved".
- **Warm start** (``warm_start_steps``): the first N training-mode forward passes (autograd on)
  return the unmasked table, in eval mode too (no train/infer gap in either phase); from pass N+1
  the mask is on. The counter is the persistent buffer ``step``, so a checkpoint resumes in the
  right phase and at the right temperature.
- **Stored memory is real** (pitfall 3): ``export()`` builds an ``AMTLStore`` that keeps only the
  first k_i dims of every value, bucketed by k (one [n_k, k] table per distinct k > 0 present),
  plus an int32 slot per row (position in the concatenated buckets; -1 for k = 0, i.e. missing
  index 0 and pruned values) and two int32 arrays of bucket bounds and widths. ``stored_bytes()``
  of the layer is that store's size from the current masks (so the 4-byte slot per value counts: at
  d = 8 it costs an eighth of a full row); ``num_parameters()`` stays what training holds (table +
  twins). ``bytes_by_field()`` charges each field its rows' kept floats and slots; the few bytes
  of bucket bounds go to the first field, so the values add up to ``stored_bytes()``.
- **First-order weights**: a plain full dim-1 table (``FullEmbedding``, zero init), not AMTL with
  choices {0, 1}: the bucketed store needs a 4-byte slot per value, as much as the dense dim-1
  table itself, so pruning scalar weights could never save memory there.
- ``compression``/``threshold`` of ``CompressedConfig`` do not apply (the sizes are learnt), so the
  config extends ``EmbeddingConfig``; every field is masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from repro.data.featuremap import FeatureMap
from repro.embeddings import EmbeddingConfig, EmbeddingLayer, FullEmbedding, FullEmbeddingConfig
from repro.registry import register_embedding

BLENDS = ("linear", "log")
NUM_FEATURES = 2  # log count, rank percentile


@dataclass
class AMTLConfig(EmbeddingConfig):
    allow_zero: bool = False  # size choices {0..d} (a value may be pruned) instead of {1..d}
    per_field: bool = True  # one twin pair per field (True) or one shared by every field
    hidden: int = 16  # hidden width of each twin MLP
    blend: str = "linear"  # a_i: linear (n / max in field) | log (log1p n / log1p max)
    temperature: float = 1.0  # T0 of p = softmax(z / T)
    temperature_final: float = 1.0  # T1, reached after anneal_steps masked steps (= T0: no annealing)
    anneal_steps: int = 0  # geometric T0 -> T1 over this many masked training steps
    init_margin: float = 2.0  # initial output bias of the full size d (the layer starts near identity)
    size_penalty: float = 0.0  # weight of mean k_i / d in penalty() (times train.embedding_l2)
    warm_start_steps: int = 0  # training-mode forwards that return the unmasked table first

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"amtl: dim must be >= 1, got {self.dim}")
        if self.blend not in BLENDS:
            raise ValueError(f"amtl: blend {self.blend!r}: expected one of {BLENDS}")
        if self.temperature <= 0 or self.temperature_final <= 0:
            raise ValueError("amtl: temperatures must be > 0")
        if self.anneal_steps < 0 or self.warm_start_steps < 0 or self.size_penalty < 0 or self.hidden < 1:
            raise ValueError("amtl: anneal_steps, warm_start_steps, size_penalty must be >= 0 and hidden >= 1")


class Twin(nn.Module):
    """G small MLPs Linear(2, h) -> ReLU -> Linear(h, C) (G = fields, or 1 when shared)."""

    def __init__(self, groups: int, hidden: int, choices: int, full_choice: int, margin: float) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(NUM_FEATURES)
        self.w1 = nn.Parameter(torch.empty(groups, NUM_FEATURES, hidden).uniform_(-bound, bound))
        self.b1 = nn.Parameter(torch.empty(groups, hidden).uniform_(-bound, bound))
        self.w2 = nn.Parameter(torch.randn(groups, hidden, choices) * (0.1 / math.sqrt(hidden)))
        b2 = torch.zeros(groups, choices)
        b2[:, full_choice] = margin
        self.b2 = nn.Parameter(b2)

    def forward(self, x: torch.Tensor, group: int) -> torch.Tensor:
        h = torch.relu(x @ self.w1[group] + self.b1[group])
        return h @ self.w2[group] + self.b2[group]


@register_embedding("amtl", config=AMTLConfig)
class AMTLEmbedding(EmbeddingLayer):
    """A full fused table behind an adaptively-masked twins-based layer (see the module docstring)."""

    supports_sparse_grad = True

    def __init__(self, feature_map: FeatureMap, cfg: AMTLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim = d = cfg.dim
        self.fields = list(feature_map.categorical)
        self.penalty_fields = [f.name for f in self.fields]
        sizes = torch.tensor([f.vocab_size for f in self.fields], dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.weight = nn.Parameter(torch.randn(int(sizes.sum()), d) * cfg.init_std)
        with torch.no_grad():
            self.weight[self.offsets] = 0.0

        # Frequency information, train split only (the feature map's counts); missing and OOV -> 0.
        counts, field_max, n_kept, oov = [], [], [], []
        for f in self.fields:
            c = np.asarray(feature_map.field_frequencies(f.name), dtype=np.float64).copy()
            if len(c) != f.vocab_size:
                raise ValueError(f"amtl: field {f.name!r} has {len(c)} counts for {f.vocab_size} rows")
            c[0] = 0.0
            if f.oov_index > 0:
                c[f.oov_index] = 0.0
            counts.append(torch.from_numpy(c).float())
            field_max.append(max(float(c.max()), 1.0))
            n_kept.append(max(f.vocab_size - 1 - (1 if f.oov_index > 0 else 0), 1))
            oov.append(f.oov_index if f.oov_index > 0 else -1)
        train_rows = feature_map.train_rows
        if train_rows is None:  # a bare feature map: every row has one value (maybe missing) per field
            train_rows = int(np.asarray(feature_map.field_frequencies(self.fields[0].name)).sum())
        self.log_train_rows = math.log1p(max(float(train_rows), 1.0))
        self.register_buffer("counts", torch.cat(counts), persistent=False)
        self.register_buffer("field_max", torch.tensor(field_max), persistent=False)
        self.register_buffer("n_kept", torch.tensor(n_kept, dtype=torch.float32), persistent=False)
        self.register_buffer("oov_index", torch.tensor(oov, dtype=torch.long), persistent=False)

        # Size choices and the [C, d] matrix mapping a one-hot choice to its prefix mask.
        self.choice_sizes = list(range(0 if cfg.allow_zero else 1, d + 1))
        choice = torch.tensor(self.choice_sizes, dtype=torch.float32)
        self.register_buffer("choice_dims", choice, persistent=False)
        self.register_buffer("prefix", (torch.arange(d).unsqueeze(0) < choice.unsqueeze(1)).float(),
                             persistent=False)
        groups = len(self.fields) if cfg.per_field else 1
        c_count = len(self.choice_sizes)
        self.h_aml = Twin(groups, cfg.hidden, c_count, c_count - 1, cfg.init_margin)
        self.l_aml = Twin(groups, cfg.hidden, c_count, c_count - 1, cfg.init_margin)
        # Training-mode forward passes so far: decides warm start and temperature; saved with the model.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._size_terms: list[torch.Tensor] = []

    # -- the mask ----------------------------------------------------------------------------
    def masking(self) -> bool:
        """Whether the mask is on (the warm start is over)."""
        return int(self.step) >= self.cfg.warm_start_steps

    def temperature(self) -> float:
        """T now: geometric from T0 to T1 over ``anneal_steps`` masked steps."""
        c = self.cfg
        if c.anneal_steps <= 0 or c.temperature == c.temperature_final:
            return c.temperature
        s = min(max(int(self.step) - c.warm_start_steps, 0) / c.anneal_steps, 1.0)
        return c.temperature * (c.temperature_final / c.temperature) ** s

    def _field_of(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.offsets, rows, right=True) - 1

    def frequency_inputs(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s [U, 2], a [U]) for fused row ids ``rows``: the twins' input and the blend weight."""
        field = self._field_of(rows)
        local = rows - self.offsets[field]
        n = self.counts[rows]
        log_n = torch.log1p(n)
        kept = (local > 0) & (local != self.oov_index[field])
        rank = torch.where(kept, 1.0 - (local - 1).float() / self.n_kept[field], torch.zeros_like(n))
        s = torch.stack([log_n / self.log_train_rows, rank], dim=-1)
        if self.cfg.blend == "linear":
            a = n / self.field_max[field]
        else:
            a = log_n / torch.log1p(self.field_max[field])
        return s, a.clamp(0.0, 1.0)

    def _choices(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Straight-through one-hot choices t [U, C] and soft p [U, C] of *sorted* fused row ids."""
        s, a = self.frequency_inputs(rows)
        # Rows are sorted, so each field is one contiguous segment: one small matmul per field.
        if self.cfg.per_field:
            bounds = torch.searchsorted(rows, self.offsets).tolist() + [len(rows)]
            segments = [(g, bounds[g], bounds[g + 1]) for g in range(len(self.fields)) if bounds[g + 1] > bounds[g]]
        else:
            segments = [(0, 0, len(rows))]
        h = torch.cat([self.h_aml(s[lo:hi], g) for g, lo, hi in segments])
        low = torch.cat([self.l_aml(s[lo:hi], g) for g, lo, hi in segments])
        z = a.unsqueeze(-1) * h + (1.0 - a.unsqueeze(-1)) * low
        p = torch.softmax(z / self.temperature(), dim=-1)
        hard = nn.functional.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)
        return hard + (p - p.detach()), p

    def masks(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m [U, d], k [U]) for *sorted unique* fused row ids; both carry the STE gradient."""
        if not self.masking():
            ones = torch.ones(len(rows), self.dim, device=rows.device)
            return ones, ones.sum(-1)
        t, _ = self._choices(rows)
        return t @ self.prefix, t @ self.choice_dims

    @torch.no_grad()
    def row_sizes(self) -> torch.Tensor:
        """k of every fused row (long [rows]); 0 for the missing index 0 of every field."""
        rows = torch.arange(self.weight.shape[0], device=self.weight.device)
        _, k = self.masks(rows)
        k = k.round().long()
        k[self.offsets] = 0
        return k

    def kept_dims(self) -> dict[str, float]:
        """Mean kept dims per field over its values (missing index 0 excluded, OOV included)."""
        k = self.row_sizes().float()
        out = {}
        for f, off in zip(self.fields, self.offsets.tolist()):
            out[f.name] = float(k[off + 1: off + f.vocab_size].mean()) if f.vocab_size > 1 else 0.0
        return out

    # -- forward ------------------------------------------------------------------------------
    def forward(self, cat: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        rows = cat + self.offsets
        out = nn.functional.embedding(rows, self.weight, sparse=self.sparse_grad)
        training = self.training and torch.is_grad_enabled()
        if self.masking():
            uniq, inverse = torch.unique(rows, return_inverse=True)  # sorted: one mask per value
            m, k = self.masks(uniq)
            out = out * m[inverse]
            if training and self.cfg.size_penalty > 0:
                real = uniq != self.offsets[self._field_of(uniq)]  # not the missing index
                if real.any():
                    self._size_terms.append(k[real].mean() / self.dim)
        if training:
            self.step += 1
        return self.remember(out * (cat != 0).unsqueeze(-1).to(out.dtype), cat)

    def penalty(self) -> torch.Tensor:
        total = super().penalty()
        for term in self._size_terms:
            total = total + self.cfg.size_penalty * term
        return total

    def forget(self) -> None:
        super().forget()
        self._size_terms = []

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.weight] if self.sparse_grad else []

    @classmethod
    def first_order(cls, feature_map: FeatureMap, cfg: EmbeddingConfig) -> EmbeddingLayer:
        """A plain full dim-1 table, zero init: a bucketed store's 4-byte slot per value would cost
        as much as the scalar weight it could prune (module docstring)."""
        return FullEmbedding(feature_map, FullEmbeddingConfig(dim=1, init_std=0.0))

    # -- sizes and export --------------------------------------------------------------------
    def _layout(self) -> tuple[torch.Tensor, list[int]]:
        vocab = [f.vocab_size for f in self.fields]
        return self.row_sizes(), vocab

    def bytes_by_field(self) -> dict[str, int]:
        k, vocab = self._layout()
        return store_bytes_by_field(k, vocab, [f.name for f in self.fields], self.weight.element_size())

    def stored_bytes(self) -> int:
        """Bytes of the exported store under the current masks (not the dense table's)."""
        return sum(self.bytes_by_field().values())

    @torch.no_grad()
    def export(self) -> "AMTLStore":
        """The serving store: only the first k_i dims of every value, bucketed by k."""
        k, vocab = self._layout()
        return AMTLStore(self.weight.detach(), k, vocab, [f.name for f in self.fields])


def store_bytes_by_field(k: torch.Tensor, vocab: list[int], names: list[str], element_size: int) -> dict[str, int]:
    """Per-field bytes of an ``AMTLStore`` holding k[r] floats for fused row r: kept floats + one
    int32 slot per row; the bucket bounds (n_buckets + 1) and widths (n_buckets) go to the first field."""
    buckets = int(torch.unique(k[k > 0]).numel())
    out, start = {}, 0
    for name, n in zip(names, vocab):
        out[name] = int(k[start:start + n].sum()) * element_size + n * 4
        start += n
    if names:
        out[names[0]] += (2 * buckets + 1) * 4
    return out


class AMTLStore(EmbeddingLayer):
    """Ragged serving store of an AMTL layer: one [n_k, k] table per distinct size k > 0, an int32
    slot per fused row (position in the concatenated buckets, -1 = zero vector) and int32 bucket
    bounds and widths. ``forward`` pads every vector with zeros back to d, which is exactly the
    masked layer's output. Its tables are frozen parameters (it is not trained)."""

    def __init__(self, weight: torch.Tensor, k: torch.Tensor, vocab: list[int], names: list[str]) -> None:
        super().__init__()
        self.dim = weight.shape[1]
        self.penalty_fields = list(names)
        self._vocab, self._names = list(vocab), list(names)
        sizes = torch.tensor(vocab, dtype=torch.long, device=weight.device)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        dims = sorted(int(v) for v in torch.unique(k[k > 0]).tolist())
        slot = torch.full((weight.shape[0],), -1, dtype=torch.int32, device=weight.device)
        tables, bounds, start = [], [0], 0
        for kb in dims:
            rows = torch.nonzero(k == kb).squeeze(1)
            tables.append(nn.Parameter(weight[rows, :kb].clone(), requires_grad=False))
            slot[rows] = torch.arange(start, start + len(rows), dtype=torch.int32, device=weight.device)
            start += len(rows)
            bounds.append(start)
        self.tables = nn.ParameterList(tables)
        self.register_buffer("slot", slot)
        self.register_buffer("bucket_bounds", torch.tensor(bounds, dtype=torch.int32))
        self.register_buffer("bucket_dims", torch.tensor(dims, dtype=torch.int32))
        self._bounds, self._dims = bounds, dims

    def forward(self, cat: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        g = self.slot[cat + self.offsets].long()
        out = torch.zeros(*cat.shape, self.dim, dtype=self.tables[0].dtype if len(self.tables) else torch.float32,
                          device=cat.device)
        for b, kb in enumerate(self._dims):
            lo, hi = self._bounds[b], self._bounds[b + 1]
            sel = (g >= lo) & (g < hi)
            out[sel, :kb] = self.tables[b][g[sel] - lo]
        return self.remember(out, cat)

    def stored_bytes(self) -> int:
        """What the store holds, measured from its tensors: bucket tables + slots + bucket arrays."""
        tensors = list(self.tables) + [self.slot, self.bucket_bounds, self.bucket_dims]
        return sum(t.numel() * t.element_size() for t in tensors)

    def row_sizes(self) -> torch.Tensor:
        g = self.slot.long()
        k = torch.zeros_like(g)
        for b, kb in enumerate(self._dims):
            k[(g >= self._bounds[b]) & (g < self._bounds[b + 1])] = kb
        return k

    def bytes_by_field(self) -> dict[str, int]:
        el = self.tables[0].element_size() if len(self.tables) else 4
        return store_bytes_by_field(self.row_sizes(), self._vocab, self._names, el)
