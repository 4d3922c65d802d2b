"""A fakesnow server that keeps its databases in files, so every process sees the same data.

Usage: python -m etl_assets_tests.emulators.fakesnow_server --port-file F --db-path DIR

fakesnow's own ``fakesnow -s`` keeps one in-memory database per session in server mode; Ray
workers connect from other processes and must see the tables the driver created, so this shares
one ``FakeSnow`` (one DuckDB per database file under ``--db-path``) across every session.
"""

from __future__ import annotations

import argparse
import os
import socket

import fakesnow.arrow
import fakesnow.server
import pyarrow as pa
import pyarrow.compute as pc
import uvicorn
from fakesnow.instance import FakeSnow

_timestamp_to_struct = fakesnow.arrow.timestamp_to_sf_struct


def _timestamp_struct_keeping_nulls(ts: pa.Array) -> pa.Array:
    # fakesnow 0.12 builds Snowflake's timestamp struct without a validity mask, so a NULL
    # timestamp reaches the client as 1970-01-01; rebuild it with the nulls.
    if isinstance(ts, pa.ChunkedArray):
        ts = ts.combine_chunks()
    struct = _timestamp_to_struct(ts)
    if ts.null_count == 0:
        return struct
    children = [pc.fill_null(struct.field(i), 0) for i in range(struct.type.num_fields)]
    return pa.StructArray.from_arrays(children, fields=list(struct.type), mask=ts.is_null())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--db-path", required=True)
    parser.add_argument("--port-file", required=True, help="written with the port once it is chosen")
    args = parser.parse_args()
    os.makedirs(args.db_path, exist_ok=True)
    fakesnow.arrow.timestamp_to_sf_struct = _timestamp_struct_keeping_nulls
    fakesnow.server.shared_fs = FakeSnow(db_path=args.db_path)
    port = args.port
    if not port:
        with socket.socket() as probe:
            probe.bind((args.host, 0))
            port = probe.getsockname()[1]
    with open(args.port_file, "w") as out:
        out.write(str(port))
    uvicorn.run(fakesnow.server.app, host=args.host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
