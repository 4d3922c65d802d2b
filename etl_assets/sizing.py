"""Cutting a sequence of sized items (row groups, files, days, partitions) into consecutive runs."""

from __future__ import annotations

from collections.abc import Sequence


def runs(sizes: Sequence[int], target: int) -> list[list[int]]:
    """Indices of ``sizes`` in consecutive runs of about ``target``: a run takes items until the
    next would carry it past ``target``; an item bigger than ``target`` is a run of its own."""
    out: list[list[int]] = []
    held = 0
    for index, size in enumerate(sizes):
        if not out or held + size > target:
            out.append([])
            held = 0
        out[-1].append(index)
        held += size
    return out
