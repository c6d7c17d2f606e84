"""`PageError`: an expected failure of a page, shown to the viewer as a page that says why."""

from __future__ import annotations

__all__ = ["PageError"]


class PageError(Exception):
    """A page that cannot be shown: its HTTP status, a title and what to do, in words."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        """Fail the page with `status_code`; `message` says what was wrong and what to do."""
        super().__init__(f"{title}: {message}")
        self.status_code = status_code
        self.title = title
        self.message = message

    def __repr__(self) -> str:
        return f"PageError({self.status_code}, {self.title!r})"
