"""The job service's settings, read from `RNNTUNE_*` environment variables (never at import)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tune.policy import Policy
from tune.spec import DEFAULT_STORAGE


class Settings(BaseSettings):
    """Everything the service needs to know; `RNNTUNE_<FIELD>` sets each one."""

    model_config = SettingsConfigDict(env_prefix="RNNTUNE_", extra="ignore")

    dev_mode: bool = False
    """Development mode: without configured tokens, the well-known dev token is accepted."""
    database_url: str = "sqlite:///runs/service/jobs.db"
    """Job store (SQLAlchemy URL; SQLite or Postgres)."""
    ray_address: str = "http://127.0.0.1:8265"
    """The Ray cluster's dashboard (Jobs API) address."""
    ray_auth_token: SecretStr | None = None
    """Token for a Ray cluster with token authentication (RAY_AUTH_MODE=token)."""
    cluster_python: str = "python"
    """The interpreter on the cluster that runs `-m tune run`; `rnntune up` uses this venv's."""
    tracking_uri: str = "http://127.0.0.1:5000"
    """MLflow tracking server; jobs whose spec names none are tracked here."""
    mlflow_ui_url: str | None = None
    """Base URL of the MLflow UI for links; default: the tracking URI when it is http(s)."""
    storage_url: str = Field(default_factory=lambda: str(Path(DEFAULT_STORAGE).resolve()))
    """Checkpoint storage for jobs whose spec keeps the default (must be reachable by the cluster)."""
    tokens: str | None = None
    """JSON list of {"user", "role", "sha256"}: the accepted bearer tokens, stored hashed."""
    tokens_file: Path | None = None
    """A file holding the same JSON list (or YAML)."""
    dependency_timeout_s: float = Field(1.0, gt=0)
    """How long a request waits for Ray or MLflow before answering with what the store knows
    (marked stale)."""
    refresh_interval_s: float = Field(1.0, ge=0)
    """Reads of one job within this interval share one refresh from Ray and MLflow (many
    clients following one job cost the cluster one query a second, not one each)."""
    submission_grace_s: float = Field(30.0, ge=0)
    """A PENDING job Ray has no record of is failed only once this old: until then its
    submission may still be under way (in another replica, sharing the store)."""
    max_concurrent_jobs: int = Field(4, ge=0)
    """Per user: pending or running jobs at once."""
    max_trials_per_job: int = Field(64, ge=1)
    max_cpus_per_trial: float = Field(8.0, gt=0)
    max_gpus_per_trial: float = Field(1.0, ge=0)
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    """Request bodies above this answer 413."""
    max_driver_cpus: float = Field(2.0, ge=0)
    max_driver_gpus: float = Field(0.0, ge=0)
    """Resources a job's driver may reserve (`resources.driver_cpus` / `driver_gpus`)."""
    max_parameters: int = Field(20_000_000, ge=1)
    """Weights of the largest network a job's search space can sample (computed from the spec)."""
    max_generated_examples: int = Field(1_000_000, ge=1)
    """Examples a built-in generated dataset may have (mnist1d, adding, copy)."""
    max_sequence_length: int = Field(10_000, ge=1)
    """Steps per sequence (generated datasets, text windows, user data's `max_len`)."""
    allowed_url_prefixes: list[str] = Field(default_factory=list)
    """Data and storage URLs a job may use must lie under one of these (JSON list): object-store
    prefixes (`s3://team-bucket/`), local folders, http(s) prefixes; `storage_url` is always
    allowed for checkpoints. Set the same variable on the Ray cluster: its job drivers check
    again (see tune/policy.py)."""
    allow_spec_tracking_uri: bool = False
    """Let a spec name its own MLflow URI (the service never opens it either way)."""
    max_dataset_bytes: int = Field(50 * 1024**3, ge=1)
    """The most data a job may read; enforced by the job drivers, which see the files."""

    def policy(self) -> Policy:
        return Policy(
            allowed_url_prefixes=self.allowed_url_prefixes,
            storage_url=self.storage_url,
            tracking_uri=self.tracking_uri,
            allow_spec_tracking_uri=self.allow_spec_tracking_uri,
            max_dataset_bytes=self.max_dataset_bytes,
        )

    @property
    def ui_base(self) -> str | None:
        if self.mlflow_ui_url:
            return self.mlflow_ui_url.rstrip("/")
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return None
