"""Releasing outbox rows in commit-safe id order (spec 06 §2.4 "exactly once, in order").

Event ids come from a sequence when the row is *inserted*, but rows become visible when their
transaction *commits*. A reader that jumped to the highest visible id could skip a lower id still
in flight, and a client resuming with ``Last-Event-ID`` would never see it. So rows are released
strictly in id order: a missing id (a *gap*) holds back the rows above it until the row appears or
the gap is older than ``gap_timeout`` — then it is taken to be a rolled-back insert and skipped.
Everything at or below :attr:`OrderedRelease.safe` is settled for good, which is what makes
``Last-Event-ID`` resumption exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

Row = TypeVar("Row")


@dataclass
class OrderedRelease(Generic[Row]):
    safe: int  # every id <= safe is settled (released, or skipped as rolled back)
    gap_timeout: float = 10.0
    pending: dict[int, Row] = field(default_factory=dict)
    gap_since: dict[int, float] = field(default_factory=dict)

    def offer(self, rows: list[tuple[int, Row]], now: float) -> list[tuple[int, Row]]:
        """Take newly read rows (any order, repeats ignored); return the rows now releasable, in id order."""
        for row_id, row in rows:
            if row_id > self.safe:
                self.pending.setdefault(row_id, row)
        released: list[tuple[int, Row]] = []
        while self.pending:
            nxt = self.safe + 1
            if nxt in self.pending:
                released.append((nxt, self.pending.pop(nxt)))
                self.gap_since.pop(nxt, None)
                self.safe = nxt
                continue
            since = self.gap_since.setdefault(nxt, now)  # a row above exists: nxt is a gap
            if now - since < self.gap_timeout:
                break
            self.gap_since.pop(nxt)
            self.safe = nxt  # rolled back (or lost): skip it
        return released
