"""The service's settings: one validated object, read from the YAML file the Helm chart mounts."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scheduler_service import pod_contract as keys
from scheduler_service.accounting import AccountingError, AccountingStore
from scheduler_service.api import ApiSettings
from scheduler_service.core import Policy
from scheduler_service.dashboard import DashboardSettings
from scheduler_service.gpu_sharing import DEFAULT_MPS_ROOT, GpuSharing, Mechanism

__all__ = [
    "AccountingSettings",
    "GpuReservationSettings",
    "GpuSharingSettings",
    "ServiceSettings",
    "SettingsError",
    "load_settings",
    "with_accounting_url",
]


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


class GpuSharingSettings(_Strict):
    """How slices are enforced on the nodes, per pool (docs/gpu-sharing.md)."""

    default: Mechanism = Field(
        "none", description="the mechanism of a pool not named in `pools`: mps, hami-core, none"
    )
    pools: dict[str, Mechanism] = Field(
        default_factory=dict, max_length=1000, description="the mechanism of each named pool"
    )
    mps_root: str = Field(
        DEFAULT_MPS_ROOT,
        pattern=r"^/[^,\s]*$",
        max_length=53,
        description="where the node agents keep their MPS daemons (the agents' --mps-root); "
        "at most 53 characters, because a daemon's socket path "
        "(<root>/<uuid>/pipe/control) is at most 107 bytes",
    )

    def to_sharing(self) -> GpuSharing:
        """The shared value the ledger and the webhook read."""
        return GpuSharing(default=self.default, pools=dict(self.pools), mps_root=self.mps_root)


class GpuReservationSettings(_Strict):
    """Reservation pods that keep slices' GPUs from NVIDIA's device plugin (kube/_reservations)."""

    enabled: bool = Field(
        False,
        description="on where whole GPUs come from NVIDIA's device plugin on nodes that also "
        "host slices: each GPU hosting slices gets a pod that holds it in the plugin",
    )
    image: str = Field(
        "", max_length=512, description="the image of the reservation pods (the service's own)"
    )
    service_account: str = Field(
        "default",
        min_length=1,
        max_length=253,
        description="the account a reservation pod patches itself with (its device)",
    )
    linger_seconds: float = Field(
        30, ge=0, le=3600, description="how long a reservation no slice needs is kept"
    )

    @model_validator(mode="after")
    def _has_image(self) -> GpuReservationSettings:
        if self.enabled and not self.image:
            raise ValueError("gpu_reservations.enabled needs gpu_reservations.image")
        return self


class AccountingSettings(_Strict):
    """Where the service keeps its accounting records (docs/usage-report.md)."""

    enabled: bool = Field(True, description="record workloads and serve usage reports")
    url: str = Field(
        "",
        max_length=2048,
        description="sqlite:///<absolute path> or postgresql://<user>@<host>/<database>; empty: "
        "the SQLite file accounting.db in data_dir. `aistack serve --accounting-url` and "
        "$AISTACK_ACCOUNTING_URL override it (keep a password out of the config file)",
    )
    data_dir: str = Field(
        "/var/lib/aistack",
        pattern=r"^/",
        max_length=1024,
        description="the directory of the default SQLite file (the chart mounts a volume there)",
    )

    @field_validator("url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if url:
            try:
                AccountingStore(url)
            except AccountingError as error:
                raise ValueError(str(error)) from None
        return url

    def store_url(self) -> str:
        """The store's URL: `url`, or the default SQLite file in `data_dir`."""
        return self.url or f"sqlite:///{self.data_dir.rstrip('/').lstrip('/')}/accounting.db"


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
    gpu_sharing: GpuSharingSettings = GpuSharingSettings()
    gpu_reservations: GpuReservationSettings = GpuReservationSettings()
    allocation_key_file: Path | None = Field(
        None,
        description="a file holding the key the service signs every allocation it writes with "
        "(HMAC-SHA256; any bytes, 32 or more); with it, a pod whose allocation annotations "
        "were not signed with it is stopped, never counted (the chart makes one)",
    )
    leader_election: LeaderElectionSettings = LeaderElectionSettings()
    api: ApiSettings = ApiSettings()
    dashboard: DashboardSettings = DashboardSettings()
    accounting: AccountingSettings = AccountingSettings()
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


def with_accounting_url(settings: ServiceSettings, url: str) -> ServiceSettings:
    """`settings` with the accounting store at `url` (the command line's override).

    Raises `SettingsError` for a URL that names neither SQLite nor PostgreSQL.
    """
    try:
        accounting = AccountingSettings.model_validate(
            {**settings.accounting.model_dump(), "url": url}
        )
    except ValidationError as error:
        problem = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise SettingsError(f"--accounting-url: {problem}") from error
    return settings.model_copy(update={"accounting": accounting})
