"""Taobao display-ad CTR data in FuxiCTR's CSV layout (TaobaoAd_x1, FuxiCTR ``data/tiny_csv``).

The user places ``train.csv``, ``valid.csv`` and ``test.csv`` (names configurable) in
``data_dir``; nothing is downloaded. Columns: ``clk`` (label), ``time_stamp``, ``userid``,
``adgroup_id``, ``pid``, ``cate_id``, ``campaign_id``, ``customer``, ``brand``, ``price``,
``cms_segid``, ``cms_group_id``, ``final_gender_code``, ``age_level``, ``pvalue_level``,
``shopping_level``, ``occupation``, ``new_user_class_level``, ``click_sequence``.

Choices, stated where the reference is silent:
- ``price`` is a dense field, log1p-transformed (FuxiCTR's TaobaoAd_x1 config buckets it; a dense
  log keeps order without a bucket table);
- ``pid`` (the ad slot) plays the ``scene`` role: it is a traffic condition, not a rank;
- ``click_sequence`` (``^``-separated) is read but not yet given to models: the feature map has no
  sequence kind until a sequence model needs one;
- ``time_stamp`` is not a feature (the split is the files the user gave: TaobaoAd_x1 trains on
  days 1-7 and tests on day 8; it has no validation file, so carve one from train, e.g. day 7).

Malformed rows (a wrong number of columns) are skipped and counted; the first few line numbers are
printed, so a bad file is never half-read silently.

Fingerprint (``repro.data.rawfiles.RawFileSource``): this module's code and the shared module's, the
config, and per file its resolved path, size, modification time and a SHA-256 of 8 sampled 64 KiB
blocks -- not the whole file, so an edit that keeps size and mtime and misses every sample goes
unnoticed (delete ``cache/taobao_ad-*`` after such surgery).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from repro.data.rawfiles import RawFileSource, Rejections, require_file
from repro.data.source import RawField
from repro.errors import DataError
from repro.registry import register_source

CATEGORICAL = {
    "userid": ("user",), "adgroup_id": ("ad",), "pid": ("scene",), "cate_id": (), "campaign_id": (),
    "customer": (), "brand": (), "cms_segid": (), "cms_group_id": (), "final_gender_code": (),
    "age_level": (), "pvalue_level": (), "shopping_level": (), "occupation": (), "new_user_class_level": (),
}


@dataclass
class TaobaoAdConfig:
    data_dir: str = "data/taobao_ad"
    train_file: str = "train.csv"
    valid_file: str = "valid.csv"
    test_file: str = "test.csv"
    block_size_mb: int = 64  # CSV read block: bounds memory per chunk


@register_source("taobao_ad", config=TaobaoAdConfig)
class TaobaoAdCSV(RawFileSource):
    name = "taobao_ad"
    split_protocol = "as given by the user's train/valid/test files"
    label = "clk"

    def _path(self, split: str) -> Path:
        path = Path(self.cfg.data_dir) / getattr(self.cfg, f"{split}_file")
        return require_file("taobao_ad", path, f"{split} file", "place the CSV there or set data.data_dir")

    def input_paths(self) -> list[Path]:
        return [self._path(split) for split in ("train", "valid", "test")]

    def fields(self) -> list[RawField]:
        return [RawField(name, "categorical", roles) for name, roles in CATEGORICAL.items()] + [
            RawField("price", "dense")
        ]

    def chunks(self, split: str) -> Iterator[pa.Table]:
        path = self._path(split)
        ledger = Rejections("taobao_ad", path, split)

        def skip(row) -> str:
            ledger.add(row.number, "wrong field count")
            return "skip"

        convert = pacsv.ConvertOptions(
            column_types={**{c: pa.string() for c in CATEGORICAL}, "clk": pa.float64(), "price": pa.float64()},
            strings_can_be_null=True,
            include_columns=["clk", *CATEGORICAL, "price"],
        )
        try:
            reader = pacsv.open_csv(
                path,
                # One parsing thread: pyarrow knows a skipped row's line number only when it parses serially.
                read_options=pacsv.ReadOptions(block_size=self.cfg.block_size_mb << 20, use_threads=False),
                parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
                convert_options=convert,
            )
            for batch in reader:
                table = pa.Table.from_batches([batch])
                price = pc.log1p(pc.max_element_wise(table.column("price"), 0.0))
                yield table.set_column(table.schema.get_field_index("price"), "price", price)
        except (pa.ArrowInvalid, KeyError) as e:
            raise DataError(f"taobao_ad: cannot parse {path}: {e}") from e
        ledger.report()
        self.rejected[split] = ledger.lines()
