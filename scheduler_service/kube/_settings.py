"""The service's settings: one validated object, read from the YAML file the Helm chart mounts."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scheduler_service import pod_contract as keys
from scheduler_service.api import ApiSettings
from scheduler_service.core import Policy

__all__ = ["ServiceSettings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """The settings file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicySettings(_Strict):
    """Cluster-wide scheduling knobs (queues may override the min-runtime protections)."""

    reclaim_min_runtime_seconds: float = Field(0, ge=0)
    preempt_min_runtime_seconds: float = Field(0, ge=0)
    reserve_for_gangs: bool = True

    def to_policy(self) -> Policy:
        """The core's policy."""
        return Policy(
            reclaim_min_runtime_seconds=self.reclaim_min_runtime_seconds,
            preempt_min_runtime_seconds=self.preempt_min_runtime_seconds,
            reserve_for_gangs=self.reserve_for_gangs,
        )


class LeaderElectionSettings(_Strict):
    """Lease-based leader election among replicas."""

    enabled: bool = True
    lease_name: str = "aistack-scheduler"
    lease_duration_seconds: float = Field(15, gt=0)
    renew_deadline_seconds: float = Field(10, gt=0)
    retry_period_seconds: float = Field(2, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionSettings:
        if (
            not self.retry_period_seconds
            < self.renew_deadline_seconds
            < self.lease_duration_seconds
        ):
            raise ValueError(
                "retry_period_seconds < renew_deadline_seconds < lease_duration_seconds must hold"
            )
        return self


class ServiceSettings(_Strict):
    """Everything the service reads from its config file; every field has a sensible default."""

    pool_label: str = keys.POOL_LABEL
    cycle_interval_seconds: float = Field(1.0, gt=0, le=60)
    eviction_grace_seconds: int = Field(
        30,
        ge=0,
        description="how long a pod the service stopped counts as holding its GPUs while the "
        "kubelet has not reported its containers stopped (cover the steps' "
        "terminationGracePeriodSeconds)",
    )
    gang_assembly_timeout_seconds: int = Field(
        600,
        ge=1,
        le=86_400,
        description="how long a gang may wait for its last pods (from its first pod's creation) "
        "before its pods are failed",
    )
    policy: PolicySettings = PolicySettings()
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    api: ApiSettings = ApiSettings()
    parallel_requests: int = Field(
        32, ge=1, le=256, description="API requests in flight when carrying out a plan"
    )
    messages_per_cycle: int = Field(
        500, ge=0, description="pending-reason updates written per cycle (admissions go first)"
    )


def load_settings(path: Path | None) -> ServiceSettings:
    """Read and validate the settings file (None: all defaults)."""
    if path is None:
        return ServiceSettings()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise SettingsError(f"cannot read settings file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise SettingsError(f"settings file {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of settings")
    try:
        return ServiceSettings.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        )
        raise SettingsError(f"settings file {path}: {problems}") from error
