"""Pages of a long list: which slice of it to show, and the numbers a pager needs."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Pager"]


@dataclass(frozen=True, slots=True)
class Pager:
    """Page `number` (from 1) of `total` items, `size` per page."""

    number: int
    size: int
    total: int

    @classmethod
    def of(cls, requested: int, size: int, total: int) -> Pager:
        """The page asked for, moved into range (past the end: the last page)."""
        last = max(1, -(-total // size))
        return cls(number=min(max(1, requested), last), size=size, total=total)

    @property
    def pages(self) -> int:
        """How many pages there are (at least one, even when empty)."""
        return max(1, -(-self.total // self.size))

    @property
    def start(self) -> int:
        """Index of the page's first item."""
        return (self.number - 1) * self.size

    @property
    def stop(self) -> int:
        """Index past the page's last item."""
        return min(self.total, self.start + self.size)

    @property
    def previous(self) -> int | None:
        """The previous page's number, or None on the first."""
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        """The next page's number, or None on the last."""
        return self.number + 1 if self.number < self.pages else None
