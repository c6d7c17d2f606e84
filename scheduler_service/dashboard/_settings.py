"""The dashboard's settings: one validated object, carried by the service's settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DashboardSettings"]


class DashboardSettings(BaseModel):
    """What the web dashboard under /ui needs to know (`dashboard:` in the service's config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Serve the dashboard under /ui on the API's HTTPS port.",
    )
    argo_ui_url: str = Field(
        default="",
        max_length=2048,
        description=(
            "The Argo Workflows UI as users reach it (e.g. https://argo.example.com), without "
            "a trailing slash; a workload page links to its workflow there. Empty: no link."
        ),
    )
    secure_cookie: bool = Field(
        default=True,
        description=(
            "Mark the sign-in cookie Secure (sent over HTTPS only). The service serves HTTPS, "
            "and browsers treat http://localhost as secure too; turn off only behind a proxy "
            "that serves the dashboard over plain HTTP on another host."
        ),
    )
    page_size: int = Field(
        default=100, ge=10, le=1000, description="Rows per page of the workloads list."
    )
    nodes_per_page: int = Field(
        default=25, ge=1, le=500, description="Nodes per page of the nodes and GPUs view."
    )
    live_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description=(
            "How often a live page's event stream looks for a new scheduling cycle; a page is "
            "sent again only when a cycle has published a new status."
        ),
    )

    live_stream_seconds: float = Field(
        default=300,
        gt=0,
        le=3600,
        description=(
            "How long one live page's event stream lasts; the browser then opens a new one, "
            "which checks the viewer's token and rights again."
        ),
    )

    @field_validator("argo_ui_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(
                f"must be an http(s) URL such as https://argo.example.com, got {value!r}"
            )
        return value.rstrip("/")
