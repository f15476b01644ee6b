"""Register operations as data: the row format of ``execute`` batches.

A batch is a one-dimensional numpy array of :data:`OP_DTYPE`, one row per
register access, run in order by ``dev.execute(ops)`` (every memory-mapped
frontend: TIS, TIS on sysbus, CRB) exactly as that many ``dev.read`` /
``dev.write`` calls would run, in one call. The layout is C's natural
alignment of the struct ::

    struct op {              /* 16 bytes, 8-byte aligned        */
        uint8_t  kind;       /*  0: OP_READ (0) or OP_WRITE (1)  */
        uint8_t  size;       /*  1: 1, 2, 4 or 8 bytes           */
        /* 2 bytes of padding */
        uint32_t offset;     /*  4: from the region's base       */
        uint64_t value;      /*  8: what a write writes          */
    };

all little-endian (the register models need a little-endian host). The
value of a read row is ignored. :func:`make_ops` builds a batch from
:class:`Op` rows, named so that their order -- ``(kind, offset, size,
value)``, offset before size as in ``dev.read(offset, size)`` -- cannot be
mistaken for the dtype's field order. The result of ``execute`` is a uint64 array
of the same length: the value each read returned, and each write's value
echoed, so a result lines up with its batch row by row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

__all__ = ["OP_DTYPE", "OP_READ", "OP_WRITE", "Op", "make_ops"]

#: A read row (``kind``).
OP_READ = 0
#: A write row (``kind``).
OP_WRITE = 1

#: One register access: kind u1, size u1, offset u4, value u8 (16 bytes, aligned).
OP_DTYPE = np.dtype([("kind", "u1"), ("size", "u1"), ("offset", "<u4"), ("value", "<u8")], align=True)


class Op(NamedTuple):
    """One row for :func:`make_ops`: ``Op(OP_READ, offset=0x30, size=4)``,
    ``Op(OP_WRITE, offset=0x24, size=1, value=0x40)``. A plain tuple in the
    same order, ``(kind, offset, size, value)``, is taken too."""

    kind: int
    offset: int
    size: int
    value: int = 0


def make_ops(rows: Iterable[tuple[int, int, int, int]]) -> np.ndarray:
    """A batch from :class:`Op` rows or ``(kind, offset, size, value)`` tuples
    (value 0 for reads). The tuple order is the rows', not :data:`OP_DTYPE`'s
    (``kind, size, offset, value``): the fields are placed by name.

    Nothing is checked here: ``execute`` checks every row before it runs any.
    """
    listed = []
    for row in rows:
        op = Op(*row)
        listed.append((op.kind, op.size, op.offset, op.value))
    return np.array(listed, dtype=OP_DTYPE)
