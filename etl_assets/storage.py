"""Files on a local disk or in object storage (``s3://``, ``gs://``), through pyarrow's filesystems.

Credentials and endpoints come from the environment, as pyarrow and deltalake read them
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``...): nothing here
takes a secret. A location is a plain string, so it pickles into Ray tasks as it is.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    return "://" in location


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``location`` and the path of it on that filesystem."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts])


def _spelled(location: str, path: str) -> str:
    """``path`` on the filesystem of ``location``, spelled as ``location`` is (URI or local path)."""
    if is_uri(location):
        return f"{location.split('://', 1)[0]}://{path}"
    return path


def is_dir(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def subfolders(location: str) -> list[str]:
    """Names of the folders directly under ``location`` (empty when it does not exist)."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def files(location: str, suffix: str) -> list[str]:
    """Files directly in the folder ``location`` whose name ends with ``suffix``, sorted by name."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    found = [i for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix)]
    return [_spelled(location, i.path) for i in sorted(found, key=lambda i: i.base_name)]


def read_bytes(location: str) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as stream:
        return stream.read()
