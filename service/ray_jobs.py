"""Submission to a Ray cluster through the Ray Jobs API, with one fixed entrypoint.

The Jobs API runs whatever command it is given, so nothing a caller sends reaches the command
line: the validated spec travels as a file in the job's `working_dir`, and the entrypoint is
always `<cluster python> -m tune run job_spec.json --job-id <our id>`.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from tune.spec import JobSpec

SPEC_NAME = "job_spec.json"


class RayUnavailable(RuntimeError):
    """The Ray cluster's Jobs API cannot be reached (or refused our credentials)."""


class RayJobMissing(RuntimeError):
    """Ray has no record of the job (the cluster was replaced or its job table cleared)."""


def entrypoint(python: str, job_id: str) -> str:
    return shlex.join([python, "-m", "tune", "run", SPEC_NAME, "--job-id", job_id])


class RayJobs:
    """A thin, typed wrapper of `JobSubmissionClient`; connection errors become RayUnavailable."""

    def __init__(self, address: str, python: str, token: str | None = None) -> None:
        self.address = address
        self.python = python
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address, headers=self.headers)
            except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError/RuntimeError/...
                raise RayUnavailable(f"Ray Jobs API at {self.address}: {_one_line(e)}") from None
        return self._client

    def submit(self, job_id: str, spec: JobSpec, owner: str) -> None:
        with tempfile.TemporaryDirectory(prefix="rnntune-job-") as tmp:
            (Path(tmp) / SPEC_NAME).write_text(json.dumps(spec.model_dump(mode="json")))
            self._call(
                self.client.submit_job,
                entrypoint=entrypoint(self.python, job_id),
                submission_id=job_id,
                # The caller's name, for MLflow and the registry's model owners (set by the
                # service, never by the spec).
                runtime_env={"working_dir": tmp, "env_vars": {"RNNTUNE_USER": owner}},
                metadata={"rnntune.owner": owner, "rnntune.job": spec.name},
                entrypoint_num_cpus=spec.resources.driver_cpus,
                entrypoint_num_gpus=spec.resources.driver_gpus,
            )

    def status(self, job_id: str) -> tuple[str, str]:
        """(Ray's status name, its message)."""
        info = self._call(self.client.get_job_info, job_id)
        return str(info.status.value), info.message or ""

    def stop(self, job_id: str) -> None:
        self._call(self.client.stop_job, job_id)

    def logs(self, job_id: str) -> str:
        return self._call(self.client.get_job_logs, job_id)

    async def follow(self, job_id: str) -> AsyncIterator[str]:
        async for chunk in self.client.tail_job_logs(job_id):
            yield chunk

    def ping(self) -> None:
        self._call(self.client.get_version)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - map Ray's untyped errors to ours
            text = _one_line(e)
            if "does not exist" in text or "404" in text and "job" in text.lower():
                raise RayJobMissing(text) from None
            if isinstance(e, (ConnectionError, OSError)) or "onnection" in text:
                self._client = None
                raise RayUnavailable(f"Ray Jobs API at {self.address}: {text}") from None
            raise


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:300]
