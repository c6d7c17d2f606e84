"""Admission webhooks: AdmissionReview envelopes around the driver's `Webhooks`.

The API server calls these routes (TLS, no bearer token) and expects an AdmissionReview back
with the request's `uid`. With `failurePolicy: Fail` any non-answer (a 500, a timeout) refuses
the object with an opaque error, so a `Webhooks` implementation that raises is turned into a
refusal whose message names the internal error: the user then sees what happened.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from scheduler_service.api._contract import AdmissionDecision
from scheduler_service.api._deps import MetricsDep, WebhooksDep
from scheduler_service.api._errors import ApiError, ErrorBody

__all__ = ["AdmissionResponse", "AdmissionReviewResponse", "AdmissionStatus", "router"]

_log = logging.getLogger(__name__)

_API_VERSION = "admission.k8s.io/v1"


class AdmissionStatus(BaseModel):
    """Why a request was refused (the API server shows `message` to the user)."""

    model_config = ConfigDict(frozen=True)

    code: int | None = Field(default=None, description="HTTP status of a refusal: 400, 403, 500.")
    message: str = Field(description="What was wrong and what to do.")


class AdmissionResponse(BaseModel):
    """The webhook's decision on one AdmissionReview request."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    uid: str = Field(description="The uid of the request this answers.")
    allowed: bool = Field(description="Whether the object may be created, updated or deleted.")
    status: AdmissionStatus | None = Field(default=None, description="The refusal, if any.")
    warnings: list[str] | None = Field(default=None, description="Warnings shown to the user.")
    patch_type: Literal["JSONPatch"] | None = Field(
        default=None, alias="patchType", description="JSONPatch when `patch` is given."
    )
    patch: str | None = Field(
        default=None, description="Base64 of a JSON patch (RFC 6902) to apply to the object."
    )


class AdmissionReviewResponse(BaseModel):
    """An `admission.k8s.io/v1` AdmissionReview carrying the response."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    api_version: Literal["admission.k8s.io/v1"] = Field(
        default="admission.k8s.io/v1", alias="apiVersion"
    )
    kind: Literal["AdmissionReview"] = "AdmissionReview"
    response: AdmissionResponse


_REVIEW_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "An admission.k8s.io/v1 AdmissionReview with a request.",
                "required": ["apiVersion", "kind", "request"],
                "properties": {
                    "apiVersion": {"const": _API_VERSION},
                    "kind": {"const": "AdmissionReview"},
                    "request": {
                        "type": "object",
                        "required": ["uid"],
                        "properties": {"uid": {"type": "string"}},
                    },
                },
            }
        }
    },
}

_HOW_TO = (
    "send an admission.k8s.io/v1 AdmissionReview with a request (the API server does when the "
    "webhook configuration lists admissionReviewVersions: [v1])"
)


def _parse(body: bytes) -> Mapping[str, Any]:
    """The review's `request`, or a 400 that says what is wrong with the review."""
    try:
        review = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON ({exc}); {_HOW_TO}") from None
    if not isinstance(review, dict):
        raise ApiError(400, f"the body is not a JSON object; {_HOW_TO}")
    if review.get("apiVersion") != _API_VERSION or review.get("kind") != "AdmissionReview":
        raise ApiError(
            400,
            f"expected apiVersion {_API_VERSION} and kind AdmissionReview, got "
            f"{review.get('apiVersion')!r} and {review.get('kind')!r}; {_HOW_TO}",
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ApiError(400, f"the AdmissionReview has no request object; {_HOW_TO}")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ApiError(400, f"the AdmissionReview's request has no uid; {_HOW_TO}")
    return request


def _response(uid: str, decision: AdmissionDecision) -> AdmissionReviewResponse:
    status = None
    if not decision.allowed:
        status = AdmissionStatus(code=decision.code, message=decision.message)
    elif decision.message:
        status = AdmissionStatus(message=decision.message)
    patch = decision.allowed and bool(decision.patch)
    return AdmissionReviewResponse(
        response=AdmissionResponse(
            uid=uid,
            allowed=decision.allowed,
            status=status,
            warnings=list(decision.warnings) or None,
            patch_type="JSONPatch" if patch else None,
            patch=base64.b64encode(json.dumps(list(decision.patch)).encode()).decode()
            if patch
            else None,
        )
    )


async def _review(
    hook: str,
    decide: Callable[[Mapping[str, Any]], AdmissionDecision],
    http_request: Request,
    metrics: MetricsDep,
) -> AdmissionReviewResponse:
    request = _parse(await http_request.body())
    try:
        # The driver's logic may block (it reads its caches under a lock): off the event loop.
        decision = await run_in_threadpool(decide, request)
    except Exception as exc:
        _log.exception("the %s webhook failed on request %s", hook, request["uid"])
        decision = AdmissionDecision(
            allowed=False,
            code=500,
            message=(
                f"internal error in the AI-Stack scheduler's {hook} webhook: "
                f"{type(exc).__name__}: {exc}; retry, and if it persists send this message to "
                "the cluster administrators (the service's log has the details)"
            ),
        )
    if metrics is not None:
        metrics.webhook_decision(hook, decision.allowed)
    return _response(request["uid"], decision)


router = APIRouter(
    prefix="/webhooks",
    tags=["webhooks"],
    responses={400: {"model": ErrorBody, "description": "Not an AdmissionReview."}},
)


@router.post(
    "/mutate-pod",
    summary="Mutating webhook for pods",
    response_model_exclude_none=True,
    openapi_extra={"requestBody": _REVIEW_BODY},
)
async def mutate_pod(
    http_request: Request, webhooks: WebhooksDep, metrics: MetricsDep
) -> AdmissionReviewResponse:
    """Gate a managed pod at creation and wire what its containers must know."""
    return await _review("mutate-pod", webhooks.mutate_pod, http_request, metrics)


@router.post(
    "/validate-queue",
    summary="Validating webhook for queues",
    response_model_exclude_none=True,
    openapi_extra={"requestBody": _REVIEW_BODY},
)
async def validate_queue(
    http_request: Request, webhooks: WebhooksDep, metrics: MetricsDep
) -> AdmissionReviewResponse:
    """Refuse invalid Queue objects with a message that says what to fix."""
    return await _review("validate-queue", webhooks.validate_queue, http_request, metrics)
