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
    Dataset, and every Dataset built on it, holds it in its plan (so a Dataset run twice finds its
    files). A copy pickled into a task is only the path. Unlike objects, whose lost copies Ray can
    rebuild by running their task again, the files are not rebuilt once the folder is gone: a
    block of the exchange's output held after its Dataset (``to_arrow_refs``) is not recomputed
    from them should its only copy be lost, which on one node means the node itself is lost."""

    def __init__(self, path: str, owner: bool = False):
        self.path = path
        if owner:
            os.makedirs(path)
            weakref.finalize(self, _remove, path, os.getpid())

    def __reduce__(self):
        return (ScratchDir, (self.path,))


def _remove(path: str, owner_pid: int) -> None:
    # A forked child inherits the finalizer: only the process that made the folder removes it.
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


FOLDER = "etl_exchange"


def node_scratch() -> ScratchDir | None:
    """A new folder for an exchange's files in the Ray session's folder, when the cluster is the
    driver's node alone; None on a cluster of several nodes, where a task may run on a node that
    cannot read another node's disk, and over Ray Client, where the driver's disk is not the
    cluster's (their exchanges go through the object store)."""
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None:
        return None
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) != 1 or alive[0]["NodeID"] != ray.get_runtime_context().get_node_id():
        return None
    # The session's folder, where Ray writes its logs and spills objects: a persistent Ray's lasts
    # as long as the cluster, so folders of drivers that were killed are removed here.
    folders = os.path.join(node.get_session_dir_path(), FOLDER)
    _remove_orphans(folders)
    return ScratchDir(os.path.join(folders, f"{os.getpid()}-{uuid.uuid4().hex}"), owner=True)


def _remove_orphans(folders: str) -> None:
    """Remove the folders under ``folders`` whose driver (the pid in the name) is gone."""
    for name in os.listdir(folders) if os.path.isdir(folders) else []:
        pid = name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(folders, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_buckets(parts: list[pa.Table], scratch: ScratchDir) -> pa.Table:
    """Runs in a Ray task: one block's buckets, in order, written to a new file of ``scratch``;
    its ``FILES`` row. The file is complete before its row exists, so a retried task leaves at
    worst an unread file behind. The parts share their dictionaries (the IPC file format takes one
    dictionary per column for the whole file): slices of one block, ``unify_dictionaries``."""
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
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"exchange file {path} is not on this node: a node joined the cluster after the "
                    "exchange was built, or its folder was removed"
                )
            reader = pa.ipc.open_file(pa.memory_map(path))
            batches = [reader.get_batch(i) for i in range(start, end)]
            tables.append(pa.Table.from_batches(batches, schema=reader.schema))
    return [table for table in tables if table.num_rows]
