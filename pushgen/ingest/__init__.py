"""Import users, items, events and opt-out lists from shop exports (or from Python rows).

``import_file(db, kind, path, ...)`` reads CSV (any of , ; tab | as delimiter, sniffed),
JSON Lines, Parquet and xlsx; ``import_rows`` takes dicts. Both validate every row the
same way and write in one transaction. The pieces:

- ``readers``: files as numbered records, with limits (line length, value length, JSON
  depth, number size) and encodings;
- ``options``: ``ImportOptions`` (mapping, constants, date formats, nulls, trimming...) and
  the step that turns a raw record into target columns;
- ``presets``: Shopify, WooCommerce and UCI Online Retail order exports;
- ``values`` and ``rows``: one value, one row of each kind;
- ``unsubscribes``: opt-out lists -> consent events;
- ``importer``: the transaction, batches, reject file and ``ImportReport``.
"""

from __future__ import annotations

from .importer import (BATCH_SIZE, KINDS, ImportReport, Kind, default_reject_path,
                       import_file, import_rows)
from .options import ImportOptions, parse_delimiter
from .presets import PRESETS, presets_help
from .readers import EXTRA_HINT, file_format
from .rows import REQUIRED
from .values import MAX_VALUE_CHARS, parse_timestamp

__all__ = ["ImportReport", "ImportOptions", "import_file", "import_rows", "parse_timestamp",
           "file_format", "default_reject_path", "parse_delimiter", "PRESETS", "presets_help",
           "BATCH_SIZE", "KINDS", "REQUIRED", "Kind", "MAX_VALUE_CHARS", "EXTRA_HINT"]
