"""An exchange's buckets passed through files on the node's disk rather than Ray's object store.

On a cluster of one node every task reads the same disk, so the map side of an exchange can write
each block's buckets to one Arrow IPC file and the task of a bucket read its slice of every file.
Through the object store, every row of an exchange larger than the store is spilled to disk by
Ray's spill processes and restored by its restore processes: each of those processes maps the
store and keeps the pages it touched for the rest of the session (430 MiB at a 100M-order day's
peak, benchmarks/README.md), and every row crosses the store twice. Through files, the task that
sorted a block writes it, the task of a bucket reads it, and no row enters the store.
"""

from __future__ import annotations

import os
import shutil
import uuid
import weakref

import pyarrow as pa
import ray

# One row per written file: its path and, for each bucket in turn, the count of record batches
# written up to the end of that bucket (bucket b is batches [ends[b - 1], ends[b]) of the file).
FILES = pa.schema([("path", pa.string()), ("ends", pa.list_(pa.int64()))])


class ScratchDir:
    """The folder of one exchange's files. The driver's copy removes the folder when it is no longer
    referenced, as the object store frees an object with its last reference: the exchange's
    Dataset holds it for as long as it may run. A copy pickled into a task is only the path."""

    def __init__(self, path: str, owner: bool = False):
        self.path = path
        if owner:
            os.makedirs(path)
            weakref.finalize(self, shutil.rmtree, path, True)

    def __reduce__(self):
        return (ScratchDir, (self.path,))


def node_scratch() -> ScratchDir | None:
    """A new folder for an exchange's files in the Ray session's folder, when the cluster is the
    driver's node alone; None on a cluster of several nodes, where a task may run on a node that
    cannot read another node's disk (their exchanges go through the object store)."""
    alive = [node for node in ray.nodes() if node.get("Alive")]
    if len(alive) != 1 or alive[0]["NodeID"] != ray.get_runtime_context().get_node_id():
        return None
    # The session's folder, where Ray writes its own logs and spilled objects; a driver that is
    # killed leaves its exchange's files there, as Ray leaves its spilled objects.
    session = ray._private.worker._global_node.get_session_dir_path()
    return ScratchDir(os.path.join(session, "etl_exchange", uuid.uuid4().hex), owner=True)


def write_buckets(parts: list[pa.Table], scratch: ScratchDir) -> pa.Table:
    """Runs in a Ray task: one block's buckets, in order, written to a new file of ``scratch``;
    its ``FILES`` row. The file is complete before its row exists, so a retried task leaves at
    worst an unread file behind."""
    if not any(part.num_rows for part in parts):
        return FILES.empty_table()
    path = os.path.join(scratch.path, f"{uuid.uuid4().hex}.arrow")
    ends, written = [], 0
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, parts[0].schema) as writer:
        for part in parts:
            for batch in part.to_batches():
                writer.write_batch(batch)
                written += 1
            ends.append(written)
    return pa.table({"path": [path], "ends": [ends]}, schema=FILES)


def read_bucket(files: pa.Table, bucket: int) -> list[pa.Table]:
    """Runs in a Ray task: ``bucket``'s rows from each file of ``files`` that holds any, mapped
    from the page cache rather than copied."""
    tables = []
    for path, ends in zip(files.column("path").to_pylist(), files.column("ends").to_pylist()):
        start, end = ends[bucket - 1] if bucket else 0, ends[bucket]
        if end > start:
            reader = pa.ipc.open_file(pa.memory_map(path))
            batches = [reader.get_batch(i) for i in range(start, end)]
            tables.append(pa.Table.from_batches(batches, schema=reader.schema))
    return tables
