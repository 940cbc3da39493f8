"""What a job may touch, as the operator allows: checked when the service accepts a spec and
again by the job driver on the cluster (which must not trust that a spec came through it).

The policy is read from the same `RNNTUNE_*` settings as the job service, so one ConfigMap (or
environment) configures both. Without `RNNTUNE_ALLOWED_URL_PREFIXES` in its environment the
driver is permissive: `rnntune run` on a user's own machine reads whatever its user can.

A URL is allowed when it lies under an allowed prefix after normalization: `..` segments never
survive (local paths are normalized, remote URLs holding one are refused), the driver resolves
symlinks of local paths (every file a folder or glob expands to), and http(s) URLs never reach
loopback, link-local, private or reserved addresses, whatever the prefixes say.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import socket
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tune.spec import JobSpec

PREFIXES_ENV = "RNNTUNE_ALLOWED_URL_PREFIXES"


class PolicyViolation(ValueError):
    """A spec touches what the policy forbids; `problems` are (field, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems


class Policy(BaseSettings):
    """The operator's limits on the URLs a job reads and writes."""

    model_config = SettingsConfigDict(env_prefix="RNNTUNE_", extra="ignore")

    allowed_url_prefixes: list[str] = Field(default_factory=list)
    """Data and storage URLs must lie under one of these (JSON list): object-store prefixes
    (`s3://team-bucket/`), local folders (`/data/shared/` or `file:///data/shared/`), http(s)
    prefixes (`https://data.example.com/`). Empty: only the service's storage."""
    storage_url: str | None = None
    """The service's checkpoint storage: always allowed for `storage.url`."""
    tracking_uri: str | None = None
    """The service's MLflow server: the only tracking URI a job may name, unless
    `allow_spec_tracking_uri`."""
    allow_spec_tracking_uri: bool = False
    max_dataset_bytes: int = Field(50 * 1024**3, ge=1)
    """The most data one job may read (all its files together); checked by the driver, which
    sees the files (the service never opens them)."""

    @classmethod
    def configured(cls) -> Policy | None:
        """The cluster's policy, or None where no operator set one (a user's own machine)."""
        return cls() if PREFIXES_ENV in os.environ else None

    def check(self, spec: JobSpec, on_cluster: bool) -> None:
        """Raises PolicyViolation naming each field. `on_cluster`: resolve symlinks and host
        names (the driver); the service decides from the text alone and opens nothing."""
        problems = []
        urls = [(f"data.{k}", getattr(spec.data, k, None)) for k in ("url", "val_url", "test_url")]
        for field, url in [*urls, ("storage.url", spec.storage.url)]:
            if url is None:
                continue
            prefixes = list(self.allowed_url_prefixes)
            if field == "storage.url" and self.storage_url:
                prefixes.append(self.storage_url)
            reason = url_problem(url, prefixes, on_cluster)
            if reason:
                problems.append((field, reason))
        uri = spec.tracking.uri
        if uri and not self.allow_spec_tracking_uri and uri != self.tracking_uri:
            problems.append(
                ("tracking.uri", "jobs are tracked on the service's MLflow server; leave it out")
            )
        if not problems and on_cluster and spec.data.name == "sequences":
            problems += self._size_problems(spec)
        if problems:
            raise PolicyViolation(problems)

    def _size_problems(self, spec: JobSpec) -> list[tuple[str, str]]:
        from lightning_modules.data.sequence_files import DataFileError, list_files

        total = 0
        for key in ("url", "val_url", "test_url"):
            url = getattr(spec.data, key)
            if url is None:
                continue
            try:
                fs, files, _ = list_files(url, spec.data.format)
            except DataFileError:
                continue  # missing data is the data reader's error to report
            total += sum(fs.size(f) for f in files)
        if total > self.max_dataset_bytes:
            limit = _size(self.max_dataset_bytes)
            return [("data.url", f"{_size(total)} of data, the limit is {limit}")]
        return []


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def url_problem(url: str, prefixes: list[str], resolve: bool) -> str | None:
    """Why `url` is not allowed under `prefixes` (None if it is)."""
    try:
        canon = canonical(url, resolve)
    except ValueError as e:
        return str(e)
    scheme = canon.split("://", 1)[0]
    if scheme in ("http", "https"):
        reason = _host_problem(urlsplit(canon).hostname or "", resolve)
        if reason:
            return reason
    allowed = []
    for p in prefixes:  # resolved like the URL (a prefix may itself sit behind a symlink)
        try:
            allowed.append(canonical(p, resolve))
        except ValueError:
            continue
    if not any(canon == p or canon.startswith(p.rstrip("/") + "/") for p in allowed):
        shown = ", ".join(prefixes) if prefixes else "none configured"
        return f"{url} is not under an allowed prefix ({shown})"
    if resolve and scheme == "file":
        escaped = _linked_outside(canon, allowed)
        if escaped:
            return f"{url}: {escaped} leads outside the allowed prefixes (a symlink)"
    return None


def canonical(url: str, resolve: bool) -> str:
    """`scheme://...` with local paths made absolute and normalized (symlinks resolved if asked)."""
    if "\x00" in url or "\\" in url:
        raise ValueError(f"{url!r}: control characters or backslashes")
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        if not path.startswith("/"):
            raise ValueError(
                f"{url}: a relative path; give an absolute URL under an allowed prefix"
            )
        path = _real_prefix(path) if resolve else posixpath.normpath(path)
        return "file://" + path
    scheme, rest = url.split("://", 1)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ValueError(f"{url}: not a URL")
    segments = urlsplit(url).path.split("/") if scheme in ("http", "https") else rest.split("/")
    if any(s in ("..", ".") for s in segments):
        raise ValueError(f"{url}: '..' or '.' segments are not allowed in a URL")
    return f"{scheme.lower()}://{rest}"


def _real_prefix(path: str) -> str:
    """realpath of the part before any glob character (the rest is matched, not followed)."""
    head = path
    for i, c in enumerate(path):
        if c in "*?[":
            head = path[: path.rfind("/", 0, i) + 1]
            break
    real = os.path.realpath(head)
    tail = path[len(head) :]
    return posixpath.normpath(f"{real}/{tail}" if tail else real)


def _linked_outside(canon: str, allowed: list[str]) -> str | None:
    """The first file a local folder or glob expands to whose real path leaves `allowed`."""
    import glob

    path = canon.removeprefix("file://")
    if any(c in path for c in "*?["):
        files = glob.glob(path, recursive=True)
    elif os.path.isdir(path):
        files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
    else:
        files = [path]
    roots = [p.removeprefix("file://").rstrip("/") for p in allowed if p.startswith("file://")]
    for f in files:
        real = os.path.realpath(f)
        if not any(real == r or real.startswith(r + "/") for r in roots):
            return f
    return None


def _host_problem(host: str, resolve: bool) -> str | None:
    """http(s) never reaches this machine, its network or the cloud's metadata address."""
    if not host:
        return "an http(s) URL needs a host"
    if host.lower() in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return f"{host}: loopback addresses are never allowed"
    addresses = [host]
    if resolve:
        try:
            addresses = [info[4][0] for info in socket.getaddrinfo(host, None)]
        except OSError:
            return f"{host}: cannot be resolved"
    for a in addresses:
        try:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
        except ValueError:
            continue  # a name: checked once resolved, on the cluster
        if not ip.is_global or ip.is_multicast:
            return f"{host}: loopback, link-local, private and reserved addresses are never allowed"
    return None
