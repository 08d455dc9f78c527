"""BH: binary code based hash embedding (Yan et al., CIKM 2021, arXiv 2109.02471; the review's "BC").

Mechanism (paper, sec. 2, Fig. 2). For a value x of a compressed field:

1. **Hash id** h(x): here either the vocabulary index (``ids: vocab``, dense ids) or the data
   contract's 63-bit raw-value hash (``ids: raw``, every raw value keeps its identity, OOV included).
2. **Binarise**: b_j = (h >> j) & 1 for j < L.
3. **Code blocks** of block length t (``strategy``):
   - ``succession``: block n holds bits [n*t, (n+1)*t), B = ceil(L/t) blocks of t bits;
   - ``skip``: B = t+1 blocks, block n holds bits {n, n+(t+1), n+2(t+1), ...}, i.e.
     ceil(L/(t+1)) bits, so a block table has 2^ceil(L/(t+1)) rows.
4. **Decimalise** every block with the bits' *local* positions: c_n = sum_k b_{p_k} * 2^k, p_k the
   k-th bit of block n in increasing order. For skip that is sum_k b_{n+k(t+1)} * 2^k. The public
   QunBB/DeepLearning kernel adds 1 << m with m the *global* bit index, which sends indices out of
   the block's [0, 2^bits) range and into the next block's rows; ``tests/test_bh.py`` pins a
   hand-computed skip example that this bug would fail.
   The tuple (c_0..c_{B-1}) is a bijection of the L-bit code for every t (each bit is in exactly one
   block), so the *index* of a value is unique at every compression level; collisions only arise
   when the block vectors are fused.
5. **Lookup + fusion**: e_n = E_n[c_n], e(x) = fuse(e_0..e_{B-1}) (``fusion``), optionally
   followed by an MLP (``fusion_mlp``).

Choices where the paper is silent (each is a config key or a fixed rule here):

- **L for dense ids** (``ids: vocab``, ``id_bits: 0``): L = ceil(log2(vocab_size)), the fewest bits
  that keep every vocabulary index distinct (the paper's L = 64 is for a 64-bit hash). The top
  block is then partly unused (ids < vocab_size <= 2^L): pitfall 3 of the notes; ``plan`` reports L.
- **L for raw ids** (``ids: raw``, ``id_bits: 0``): L = 63, the whole hash the data contract keeps
  (it drops the top bit of a 64-bit hash so that int64 stays non-negative). This is the paper's
  setting: codes stay unique per raw value (two values share a code only if their 63-bit hashes
  collide, ~n^2/2^64 pairs), at the cost of more blocks for a given budget: ceil(63/t) tables
  instead of ceil(log2 N / t), and since a hash's bits are uniformly random every block acts as an
  independent 2^t-bucket hash. An explicit ``id_bits`` L < 63 keeps the low L bits (the hash mod
  2^L; its low bits are well mixed): then two values get *identical* codes with probability 2^-L
  per pair, i.e. about n^2 / 2^(L+1) fully colliding pairs among n values. An explicit ``id_bits``
  with ``ids: vocab`` likewise reduces the index mod 2^L when L < ceil(log2 N) (full collisions),
  and only adds constant blocks when L is larger.
- **Separate tables** (default) or one **shared** table per field (``shared_tables``). Separate
  tables are the per-block offsets of QunBB (index c_n + n * 2^bits in one [B * 2^bits, d] table).
  Shared tables with sum fusion add collisions the code does not have: e(x) = sum_n E[c_n(x)] is a
  function of the *multiset* of block values, invariant to permuting blocks of equal length, so two
  values whose block tuples are permutations of each other (t = 2: id 0b0001 -> (1, 0) and id
  0b0100 -> (0, 1)) get the same vector. Per-block tables make the lookup position-aware.
- **Table sizes follow the paper's cost formula**: B * 2^bits rows per field (2^bits shared), so a
  short last succession block, or the under-used top block of dense ids, still gets 2^bits rows;
  those rows are stored and counted in ``stored_bytes()``.
- **Fusion** (``fusion``): ``sum`` (default; the paper's sum pooling) or ``concat``. QunBB's concat
  widens the output to B * d; here every block table is ceil(dim/B) wide, the B pieces are
  concatenated and *cut* to the first ``dim`` columns (the last block loses < B columns, stored but
  unused), so the output is always ``dim`` wide and the downstream MLP's input width is the same at
  every compression level (pitfall 4). With concat a field needs B <= dim blocks (otherwise the cut
  would drop whole blocks and codes would stop being unique): the t search skips such t, an
  explicit one is rejected.
- **Fusion MLP** (``fusion_mlp``; the paper names an MLP as a possible fusion function and gives no
  architecture): per compressed field, Linear(in, dim) -> ReLU -> Linear(dim, dim), with in = dim
  after sum, or the whole uncut concatenation B * ceil(dim/B) with concat (it then *projects*
  instead of cutting). Its parameters are dense (the dense embedding optimizer trains them) and
  count in the field's stored bytes and in its budget.
- **Block length from the budget** (``block_length: 0``): per compressed field, the budget is
  ``field_budget(vocab_size, compression)`` rows of width dim, i.e. that many * dim floats. Among
  t = 1..L (succession) or t = 1..L-1 (skip; larger t only adds empty blocks) the layer takes the t
  whose stored floats (table rows * row width, + MLP) are the largest not exceeding the budget; ties
  go to the larger block (more bits per block, fewer blocks to fuse). If no t fits (even the
  cheapest), it takes the cheapest one and ``plan[field]['within_budget']`` is False: the achieved
  ratio is then below the target. An explicit ``block_length`` > 0 applies to every compressed
  field, clamped to L (succession) or L-1 (skip), and ignores ``compression``.
- **Which fields**: a field is coded when vocab_size > ``threshold`` and either ``block_length`` > 0
  or ``compression`` > 1; the others keep a full row per vocabulary index (the shared rule of
  ``repro.compression``), so at compression 1 the layer holds exactly the full embedding's rows.
- **Initialisation**: normal, std init_std / sqrt(B) per block row with sum fusion (so the fused
  vector starts at the full embedding's scale whatever B is), init_std with concat; QunBB uses
  uniform init. Missing values (index 0) map to the zero vector (the output is masked), and the
  penalty is the shared lookup penalty on the fused output (``EmbeddingLayer``).
- **First-order weights** (``first_order``): the same scheme at dim 1 with zero init, but always
  with sum fusion and no fusion MLP: concat at dim 1 would keep only block 0 (a 1-wide cut), and an
  MLP over one zero-initialised scalar trains nothing useful. Its block length is chosen by the
  same rule at dim 1 (so it can differ from the second-order layer's under concat or MLP).

``self.plan[field]`` records, per field: ``coded``, ``L``, ``t``, ``blocks`` (B), ``block_bits``,
``rows`` (table rows), ``width``, ``floats`` (stored), ``budget_rows`` and ``within_budget``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from repro.compression import CompressedConfig, CompressedEmbedding, FusedTables, field_budget, field_ids
from repro.data.featuremap import FeatureMap
from repro.registry import register_embedding

STRATEGIES = ("succession", "skip")
FUSIONS = ("sum", "concat")
MAX_ID_BITS = 63  # the raw-value hash of the data contract is 63 bits (int64 >= 0)


@dataclass
class BHConfig(CompressedConfig):
    strategy: str = "succession"  # succession | skip: how bits are grouped into code blocks
    block_length: int = 0  # t; 0 = chosen per field from ``compression``
    id_bits: int = 0  # L; 0 = auto (vocab: ceil(log2 vocab_size); raw: 63)
    shared_tables: bool = False  # one table per field for all blocks (sum then collides permutations)
    fusion: str = "sum"  # sum | concat (pieces of ceil(dim/B) cut to dim)
    fusion_mlp: bool = False  # an MLP per compressed field over the fused vector

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"bh strategy: unknown {self.strategy!r}; expected one of {STRATEGIES}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"bh fusion: unknown {self.fusion!r}; expected one of {FUSIONS}")
        if self.block_length < 0:
            raise ValueError(f"bh block_length must be >= 0 (0 = from compression), got {self.block_length}")
        if not 0 <= self.id_bits <= MAX_ID_BITS:
            raise ValueError(f"bh id_bits must be in [0, {MAX_ID_BITS}] (0 = auto), got {self.id_bits}")


# -- the code: pure functions, shared by the layer and the tests ---------------------------------
def block_shape(L: int, t: int, strategy: str) -> tuple[int, int]:
    """(number of blocks B, bits per block) of an L-bit code at block length t."""
    if L < 1:
        raise ValueError(f"code length L must be >= 1, got {L}")
    if strategy == "succession":
        if t < 1:
            raise ValueError(f"succession block length must be >= 1, got {t}")
        return math.ceil(L / t), t
    if strategy == "skip":
        if t < 0:
            raise ValueError(f"skip interval must be >= 0, got {t}")
        return t + 1, math.ceil(L / (t + 1))
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


def block_positions(L: int, t: int, strategy: str) -> list[list[int]]:
    """The global bit positions of every block, in increasing order (= the local order k)."""
    B, bits = block_shape(L, t, strategy)
    if strategy == "succession":
        return [list(range(n * t, min((n + 1) * t, L))) for n in range(B)]
    # Skip blocks n >= L (only when t >= L) hold no bit: their index is always 0.
    return [list(range(n, L, t + 1)) for n in range(B)]


def positions_tensor(blocks: list[list[int]], device: torch.device | None = None) -> torch.Tensor:
    """[S, K] int64 bit positions of S blocks, padded with -1 (no bit) to the longest block."""
    K = max(1, max((len(b) for b in blocks), default=1))
    out = torch.full((len(blocks), K), -1, dtype=torch.long)
    for s, b in enumerate(blocks):
        out[s, : len(b)] = torch.tensor(b, dtype=torch.long)
    return out.to(device) if device is not None else out


def decimalise(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Block values: ``x`` [..., S] int64 codes, ``pos`` [S, K] bit positions (-1 = none) ->
    [..., S] with value sum_k bit(x, pos[s, k]) * 2^k (the bit's *local* position k in its block,
    never its global index: see the module docstring on the QunBB skip bug)."""
    K = pos.shape[-1]
    local = torch.arange(K, device=pos.device, dtype=torch.long)
    weight = torch.where(pos >= 0, torch.ones_like(pos) << local, torch.zeros_like(pos))  # [S, K]
    bits = (x.unsqueeze(-1) >> pos.clamp(min=0)) & 1  # [..., S, K]
    return (bits * weight).sum(-1)


def id_mask(L: int) -> int:
    """Keeps the low L bits (the id mod 2^L); 2^63 - 1 at L = 63 still fits an int64."""
    return (1 << L) - 1


def block_indices(ids: torch.Tensor, L: int, t: int, strategy: str) -> torch.Tensor:
    """Decimalised code blocks of int64 ``ids`` [...] (reduced mod 2^L) -> [..., B], each in
    [0, 2^bits) with (B, bits) = ``block_shape(L, t, strategy)``."""
    blocks = block_positions(L, t, strategy)
    pos = positions_tensor(blocks, ids.device)
    x = (ids.long() & id_mask(L)).unsqueeze(-1).expand(*ids.shape, len(blocks))
    return decimalise(x, pos)


def table_rows(L: int, t: int, strategy: str, shared: bool) -> int:
    """Rows of a field's block tables: B * 2^bits (separate), 2^bits (one shared table)."""
    B, bits = block_shape(L, t, strategy)
    return (1 if shared else B) * 2**bits


def mlp_floats(in_width: int, dim: int) -> int:
    """Parameters of the fusion MLP Linear(in, dim) -> ReLU -> Linear(dim, dim)."""
    return in_width * dim + dim + dim * dim + dim


def block_width(dim: int, B: int, fusion: str) -> int:
    """Row width of a field's block tables: dim (sum) or ceil(dim / B) (concat)."""
    return dim if fusion == "sum" else math.ceil(dim / B)


def field_floats(L: int, t: int, dim: int, strategy: str, shared: bool, fusion: str, mlp: bool) -> int:
    """Stored floats of one coded field: block tables (+ its fusion MLP)."""
    B, _ = block_shape(L, t, strategy)
    width = block_width(dim, B, fusion)
    out = table_rows(L, t, strategy, shared) * width
    if mlp:
        out += mlp_floats(dim if fusion == "sum" else B * width, dim)
    return out


def candidate_lengths(L: int, strategy: str) -> range:
    """Block lengths worth considering: 1..L (succession), 1..L-1 (skip: t >= L adds empty blocks)."""
    return range(1, L + 1) if strategy == "succession" else range(1, max(1, L - 1) + 1)


def choose_block_length(L: int, budget_rows: int, dim: int, strategy: str, shared: bool = False,
                        fusion: str = "sum", mlp: bool = False) -> tuple[int, bool]:
    """The t whose stored floats are the largest within ``budget_rows * dim`` (ties: more bits per
    block), and whether it fits; if none fits, the cheapest t and False."""
    cost: dict[int, int] = {}
    for t in candidate_lengths(L, strategy):
        B, _ = block_shape(L, t, strategy)
        if fusion == "concat" and not mlp and B > dim:
            continue  # the cut to dim columns would drop whole blocks: codes no longer unique
        cost[t] = field_floats(L, t, dim, strategy, shared, fusion, mlp)
    if not cost:
        raise ValueError(f"bh: no block length gives at most dim={dim} blocks for L={L} with concat fusion")
    bits = {t: block_shape(L, t, strategy)[1] for t in cost}
    budget = budget_rows * dim
    fitting = [t for t in cost if cost[t] <= budget]
    if fitting:
        return max(fitting, key=lambda t: (cost[t], bits[t])), True
    return min(cost, key=lambda t: (cost[t], -bits[t])), False


# -- the layer -----------------------------------------------------------------------------------
@register_embedding("bh", config=BHConfig)
class BinaryCodeHashEmbedding(CompressedEmbedding):
    """Binary code based hash embedding (see the module docstring); one fused gather per forward.

    Every (field, block) pair is a *slot*: its bit positions, the row base of its table and the
    field it belongs to are buffers, so the block indices of all fields are computed by one set of
    int64 tensor ops. A full (uncompressed) field is one slot whose index is the vocabulary index.
    Sum fusion is one ``embedding_bag`` (bag = a field's slots); concat gathers per row width.
    """

    def __init__(self, feature_map: FeatureMap, cfg: BHConfig) -> None:
        super().__init__(feature_map, cfg)
        dim = cfg.dim
        self.plan: dict[str, dict] = {}
        fields = []  # per field: (coded, L, slots' bit positions, bits per block, rows, width)
        for f in self.fields:
            coded = f.vocab_size > cfg.threshold and (cfg.block_length > 0 or cfg.compression > 1.0)
            budget = field_budget(f.vocab_size, cfg.compression)
            if not coded:
                self.plan[f.name] = {"coded": False, "rows": f.vocab_size, "width": dim,
                                     "floats": f.vocab_size * dim, "budget_rows": budget, "within_budget": True}
                fields.append((False, 0, [[]], 0, f.vocab_size, dim))
                continue
            L = self._id_bits(f.vocab_size, cfg)
            if cfg.block_length > 0:
                top = max(candidate_lengths(L, cfg.strategy))
                t = min(cfg.block_length, top)
                B, _ = block_shape(L, t, cfg.strategy)
                if cfg.fusion == "concat" and not cfg.fusion_mlp and B > dim:
                    raise ValueError(f"bh: field {f.name!r} has B={B} blocks > dim={dim} with concat fusion; "
                                     "the cut to dim columns would drop blocks (use sum, fusion_mlp or another t)")
                floats = field_floats(L, t, dim, cfg.strategy, cfg.shared_tables, cfg.fusion, cfg.fusion_mlp)
                fits = floats <= budget * dim
            else:
                t, fits = choose_block_length(L, budget, dim, cfg.strategy, cfg.shared_tables, cfg.fusion,
                                              cfg.fusion_mlp)
            B, bits = block_shape(L, t, cfg.strategy)
            rows = table_rows(L, t, cfg.strategy, cfg.shared_tables)
            width = block_width(dim, B, cfg.fusion)
            self.plan[f.name] = {
                "coded": True, "L": L, "t": t, "strategy": cfg.strategy, "blocks": B, "block_bits": bits,
                "rows": rows, "width": width,
                "floats": field_floats(L, t, dim, cfg.strategy, cfg.shared_tables, cfg.fusion, cfg.fusion_mlp),
                "budget_rows": budget, "within_budget": bool(fits),
            }
            fields.append((True, L, block_positions(L, t, cfg.strategy), bits, rows, width))

        # One fused table per row width (sum: one; concat: one per distinct ceil(dim/B)).
        widths = sorted({w for *_, w in fields}, reverse=True)
        group_of = [widths.index(w) for *_, w in fields]
        self._group_fields: list[list[str]] = [[] for _ in widths]
        tables = []
        for g, w in enumerate(widths):
            members = [j for j in range(len(fields)) if group_of[j] == g]
            self._group_fields[g] = [self.fields[j].name for j in members]
            tables.append(FusedTables([fields[j][4] for j in members], w, cfg.init_std))
        self.table_list = nn.ModuleList(tables)
        self.tables = list(self.table_list)

        # Slots ordered by (table group, field, block): a field's slots, and its columns in the
        # concatenated lookups, are contiguous.
        slot_field, slot_full, slot_base, slot_blocks = [], [], [], []
        self._group_slots: list[tuple[int, int]] = []
        self._field_cols: list[tuple[int, int]] = [(0, 0)] * len(fields)  # [start, end) in the concat
        field_start = [0] * len(fields)
        col = 0
        for g, table in enumerate(self.tables):
            first = len(slot_field)
            members = [j for j in range(len(fields)) if group_of[j] == g]
            for local, j in enumerate(members):
                coded, L, blocks, bits, rows, width = fields[j]
                base = int(table.offsets[local])
                field_start[j] = len(slot_field)
                for n, b in enumerate(blocks):
                    slot_field.append(j)
                    slot_full.append(not coded)
                    # Separate tables: block n's rows start at n * 2^bits (QunBB's per-block offsets).
                    slot_base.append(base + (0 if (cfg.shared_tables or not coded) else n * 2**bits))
                    slot_blocks.append(b)
                self._field_cols[j] = (col, col + len(blocks) * width)
                col += len(blocks) * width
            self._group_slots.append((first, len(slot_field)))
        self.register_buffer("slot_field", torch.tensor(slot_field, dtype=torch.long), persistent=False)
        self.register_buffer("slot_full", torch.tensor(slot_full, dtype=torch.bool), persistent=False)
        self.register_buffer("slot_base", torch.tensor(slot_base, dtype=torch.long), persistent=False)
        self.register_buffer("slot_pos", positions_tensor(slot_blocks), persistent=False)
        self.register_buffer("field_start", torch.tensor(field_start, dtype=torch.long), persistent=False)
        self.register_buffer("field_coded", torch.tensor([c for c, *_ in fields], dtype=torch.bool), persistent=False)
        self.register_buffer("field_mask", torch.tensor([id_mask(L) if c else 0 for c, L, *_ in fields],
                                                        dtype=torch.long), persistent=False)
        # Concat without MLP: each field's output is the first dim columns of its pieces (the cut).
        cut = [torch.arange(a, a + dim) for a, _ in self._field_cols]
        self.register_buffer("cut_cols", torch.cat(cut) if cut else torch.zeros(0, dtype=torch.long),
                             persistent=False)

        self.mlps = nn.ModuleDict()
        if cfg.fusion_mlp:
            for j, f in enumerate(self.fields):
                if fields[j][0]:
                    a, b = self._field_cols[j]
                    in_width = dim if cfg.fusion == "sum" else b - a
                    self.mlps[f.name] = nn.Sequential(nn.Linear(in_width, dim), nn.ReLU(), nn.Linear(dim, dim))

        with torch.no_grad():
            for g, table in enumerate(self.tables):
                members = [j for j in range(len(fields)) if group_of[j] == g]
                for local, j in enumerate(members):
                    lo = int(table.offsets[local])
                    hi = lo + fields[j][4]
                    if not fields[j][0]:
                        table.weight[lo] = 0.0  # a full field's padding row, as FullEmbedding's
                    elif cfg.fusion == "sum":
                        # B summed rows of std s have std s * sqrt(B): start at the full table's scale.
                        table.weight[lo:hi] /= math.sqrt(len(fields[j][2]))

    @staticmethod
    def _id_bits(vocab_size: int, cfg: BHConfig) -> int:
        if cfg.id_bits > 0:
            return cfg.id_bits
        if cfg.ids == "raw":
            return MAX_ID_BITS
        return max(1, (vocab_size - 1).bit_length())  # ceil(log2 vocab_size): ids 0..vocab_size-1

    @classmethod
    def first_order(cls, feature_map: FeatureMap, cfg: BHConfig) -> "BinaryCodeHashEmbedding":
        """Per-value scalar weights: the scheme at dim 1, zero init, always sum fusion without MLP
        (concat at dim 1 would keep block 0 only)."""
        return cls(feature_map, dataclasses.replace(cfg, dim=1, init_std=0.0, fusion="sum", fusion_mlp=False))

    def slot_indices(self, cat: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        """[B, S] global rows of every slot (coded fields: block index + its table's base)."""
        cat = cat.long()
        ids = field_ids(cat, raw, self.cfg.ids).long() if bool(self.field_coded.any()) else cat
        src = torch.where(self.field_coded, ids & self.field_mask, cat)  # full fields: vocab index
        x = src[:, self.slot_field]
        return torch.where(self.slot_full, x, decimalise(x, self.slot_pos)) + self.slot_base

    def embed(self, cat: torch.Tensor, raw: torch.Tensor | None) -> torch.Tensor:
        idx = self.slot_indices(cat, raw)
        n, S = idx.shape
        F, dim = len(self.fields), self.dim
        if self.cfg.fusion == "sum":
            # One bag per (row, field): the field's slots are contiguous in idx.
            offsets = (torch.arange(n, device=idx.device) * S).unsqueeze(1) + self.field_start
            fused = nn.functional.embedding_bag(idx.reshape(-1), self.tables[0].weight, offsets.reshape(-1),
                                                mode="sum", sparse=self.sparse_grad).view(n, F, dim)
            if not self.mlps:
                return fused
            return torch.stack([self.mlps[f.name](fused[:, j]) if f.name in self.mlps else fused[:, j]
                                for j, f in enumerate(self.fields)], dim=1)
        pieces = [nn.functional.embedding(idx[:, a:b], table.weight, sparse=self.sparse_grad).flatten(1)
                  for table, (a, b) in zip(self.tables, self._group_slots)]
        flat = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        if not self.mlps:
            return flat.index_select(1, self.cut_cols).view(n, F, dim)  # backward: one index_add
        out = []
        for j, f in enumerate(self.fields):
            a, b = self._field_cols[j]
            out.append(self.mlps[f.name](flat[:, a:b]) if f.name in self.mlps else flat[:, a:a + dim])
        return torch.stack(out, dim=1)

    def bytes_by_field(self) -> dict[str, int]:
        out = {f.name: 0 for f in self.fields}
        for table, names in zip(self.tables, self._group_fields):
            for name, b in zip(names, table.field_bytes()):
                out[name] += b
        for name, mlp in self.mlps.items():
            out[name] += sum(p.numel() * p.element_size() for p in mlp.parameters())
        return out
