"""The events landing zone: one folder per batch under ``landing/events``, JSON lines inside."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from etl_assets import storage
from etl_assets.ray_steps import from_tables, map_blocks
from etl_assets.sources.crm import SourceError
from etl_assets.transforms.events import mark_new_lines, parse_event_file


@dataclass(frozen=True)
class LandingFile:
    batch_id: str
    path: str


def ready_batches(landing_dir: str) -> list[str]:
    """Batch ids whose folder holds at least one ``.jsonl`` file, oldest name first.

    Folders starting with ``.`` or ``_`` are still being written (writers rename them when done).
    """
    return [
        name
        for name in storage.subfolders(str(landing_dir))
        if not name.startswith((".", "_")) and storage.files(storage.join(str(landing_dir), name), ".jsonl")
    ]


def batch_files(landing_dir: str, batch_ids: Sequence[str]) -> list[LandingFile]:
    """Every file of the batches; fails naming the folder when a batch is missing or empty."""
    files = []
    for batch_id in batch_ids:
        folder = storage.join(str(landing_dir), batch_id)
        found = storage.files(folder, ".jsonl")
        if not found:
            raise SourceError(f"events landing batch {folder} is missing or holds no .jsonl files")
        files += [LandingFile(batch_id, path) for path in found]
    return files


def count_lines(path: str) -> int:
    """Non-blank lines of a landing file: the lines a load must account for."""
    text = storage.read_bytes(path).decode("utf-8", errors="replace")
    lines = pc.utf8_trim_whitespace(pa.array(text.split("\n"), pa.string()))
    return int(pc.sum(pc.not_equal(lines, "")).as_py() or 0)


def _parse_files(batch: pa.Table) -> pa.Table:
    tables = []
    for batch_id, path in zip(batch.column("batch_id").to_pylist(), batch.column("path").to_pylist()):
        try:
            # Undecodable bytes become U+FFFD, so such a line is rejected rather than the file.
            text = storage.read_bytes(path).decode("utf-8", errors="replace")
        except OSError as exc:
            raise SourceError(f"events landing file {path} is unreadable: {exc}") from exc
        tables.append(mark_new_lines(parse_event_file(text, path, batch_id)))
    return pa.concat_tables(tables)


def read_event_files(files: Sequence[LandingFile]) -> ray.data.Dataset:
    """One Ray task per landing file: each line parsed, validated and tagged with file and line."""
    items = pa.table({"batch_id": [f.batch_id for f in files], "path": [f.path for f in files]})
    blocks = [items.slice(i, 1) for i in range(items.num_rows)]
    return map_blocks(from_tables(blocks), _parse_files, batch_size=1)
