"""The API's settings: one validated object, nested by the service's full settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ApiSettings"]


class ApiSettings(BaseModel):
    """What the HTTP API needs to know; the service's settings carry it as one field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auth: bool = Field(
        default=True,
        description=(
            "Require a Kubernetes bearer token on every /api/v1 request and check RBAC for it. "
            "Turn off only for local use (the simulator, a laptop): every request is then an "
            "anonymous user allowed everything."
        ),
    )
