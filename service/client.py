"""The CLI's HTTP client for the job service (URL and token from the environment or `rnntune up`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from lightning_modules.documents import DocumentError, load_json, load_yaml
from service.stack import home, load_stack
from tune.spec import absolute_data_paths


class ServiceError(RuntimeError):
    """A request the service refused or could not be reached for; the message is one line."""


class ServiceUnreachable(ServiceError):
    """No answer (connection refused or dropped, a gateway error): worth trying again."""


def submission_body(path: Path) -> tuple[bytes, str]:
    """The spec file as it is sent: local relative data paths made absolute (from the current
    directory, as `rnntune run` resolves them), so the service's policy judges the files the
    user means; the file's own bytes when there is nothing to resolve (or it does not parse:
    the service says what is wrong)."""
    raw = path.read_bytes()
    kind = "application/json" if path.suffix == ".json" else "application/yaml"
    try:
        doc = load_json(raw) if kind == "application/json" else load_yaml(raw.decode())
    except (DocumentError, UnicodeDecodeError):
        return raw, kind
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        return raw, kind
    resolved = absolute_data_paths(data)
    if not resolved:
        return raw, kind
    try:
        body = json.dumps({**doc, "data": {**data, **resolved}}).encode()
    except (TypeError, ValueError):  # a YAML value JSON has not (a date): sent as written
        return raw, kind
    return body, "application/json"


@dataclass
class ServiceClient:
    url: str
    token: str
    timeout: float = 30.0

    @classmethod
    def configured(cls) -> ServiceClient:
        """`RNNTUNE_URL`/`RNNTUNE_TOKEN`, else the stack `rnntune up` started."""
        url, token = os.environ.get("RNNTUNE_URL"), os.environ.get("RNNTUNE_TOKEN")
        if not (url and token):
            stack = load_stack()
            if stack is None:
                raise ServiceError(
                    "no job service configured: run `rnntune up`, or set RNNTUNE_URL and "
                    f"RNNTUNE_TOKEN (looked in {home() / 'stack.json'})"
                )
            url, token = url or stack.url, token or stack.token
        return cls(url.rstrip("/"), token)

    def request(self, method: str, path: str, stream: bool = False, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        try:
            r = requests.request(
                method,
                f"{self.url}{path}",
                headers=headers,
                timeout=None if stream else self.timeout,
                stream=stream,
                **kwargs,
            )
        except requests.ConnectionError:
            raise ServiceUnreachable(
                f"cannot reach the job service at {self.url} (is it running? `rnntune up`)"
            ) from None
        except requests.Timeout:
            raise ServiceUnreachable(
                f"the job service at {self.url} did not answer in time"
            ) from None
        if r.status_code in (502, 503, 504):  # a proxy in front of a restarting service
            raise ServiceUnreachable(_describe(r))
        if r.status_code >= 400:
            raise ServiceError(_describe(r))
        return r

    def submit(self, spec_path: str) -> dict:
        path = Path(spec_path)
        if not path.is_file():
            raise ServiceError(f"{spec_path}: no such file")
        body, kind = submission_body(path)
        return self.request("POST", "/jobs", data=body, headers={"Content-Type": kind}).json()

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/jobs/{job_id}").json()

    def jobs(self, status: str | None = None, limit: int = 50) -> dict:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self.request("GET", "/jobs", params=params).json()

    def cancel(self, job_id: str) -> dict:
        return self.request("DELETE", f"/jobs/{job_id}").json()

    def logs(self, job_id: str, tail: int = 200) -> str:
        return self.request("GET", f"/jobs/{job_id}/logs", params={"tail": tail}).text

    def follow(self, job_id: str) -> Iterator[str]:
        """The driver's log from its start, streamed until the job ends; a dropped connection
        raises ServiceUnreachable."""
        r = self.request("GET", f"/jobs/{job_id}/logs", params={"follow": "true"}, stream=True)
        try:
            yield from r.iter_content(chunk_size=None, decode_unicode=True)
        except requests.RequestException:  # e.g. ChunkedEncodingError: the service went away
            raise ServiceUnreachable(
                f"lost the connection to the job service at {self.url}"
            ) from None

    def models(self, name: str | None = None) -> list[dict]:
        if name:
            return [self.request("GET", f"/models/{name}").json()]
        return [
            self.request("GET", f"/models/{m['name']}").json()
            for m in self.request("GET", "/models").json()
        ]

    def promote(self, name: str, version: str, alias: str) -> dict:
        return self.request(
            "POST", f"/models/{name}/aliases", json={"alias": alias, "version": version}
        ).json()


def _describe(r: requests.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}: {r.text.strip()[:300]}"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    errors = body.get("errors", []) if isinstance(body, dict) else []
    lines = [f"HTTP {r.status_code}: {detail}"]
    lines += [f"  {e.get('field') or 'spec'}: {e.get('message')}" for e in errors]
    return "\n".join(lines)
