"""Bearer tokens, stored only as SHA-256 hashes, each mapped to a user and a role."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Literal

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from service.settings import Settings

Role = Literal["user", "admin"]
DEV_TOKEN = "rnntune-dev-token"  # accepted only in dev mode, and only when no tokens are set
DEV_USER = "dev"


class TokenEntry(BaseModel):
    user: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role = "user"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Principal:
    user: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AuthConfigError(RuntimeError):
    """Tokens are missing or unsafe; the service refuses to start."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return f"rt_{secrets.token_urlsafe(32)}"


def load_tokens(settings: Settings) -> list[TokenEntry]:
    """Tokens from `RNNTUNE_TOKENS` and `RNNTUNE_TOKENS_FILE`; refuses a default secret outside dev."""
    raw: list = []
    try:
        if settings.tokens:
            raw += json.loads(settings.tokens)
        if settings.tokens_file:
            raw += yaml.safe_load(settings.tokens_file.read_text()) or []
        entries = TypeAdapter(list[TokenEntry]).validate_python(raw)
    except (OSError, ValueError, ValidationError) as e:
        raise AuthConfigError(f"tokens: cannot read the configured tokens ({e})") from None
    dev_hash = hash_token(DEV_TOKEN)
    if not settings.dev_mode:
        if not entries:
            raise AuthConfigError(
                "tokens: none configured; set RNNTUNE_TOKENS or RNNTUNE_TOKENS_FILE "
                "(or RNNTUNE_DEV_MODE=true on a laptop)"
            )
        if any(e.sha256 == dev_hash for e in entries):
            raise AuthConfigError("tokens: the default dev token is not allowed outside dev mode")
    elif not entries:
        entries = [TokenEntry(user=DEV_USER, role="admin", sha256=dev_hash)]
    return entries


class TokenTable:
    """Looks a presented token up by its hash (constant-time comparison)."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self.entries = entries

    def principal(self, token: str | None) -> Principal | None:
        if not token:
            return None
        presented = hash_token(token)
        found = None
        for e in self.entries:  # compare with every entry: timing does not reveal which matched
            if hmac.compare_digest(presented, e.sha256):
                found = Principal(e.user, e.role)
        return found
