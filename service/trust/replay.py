"""The jti replay cache: each (iss, jti) is accepted once until the token could no longer be valid.

In-process (``MemoryReplayCache``) for one process; Redis (``RedisReplayCache``) when several
workers or replicas must share it (``settings.redis_url``): a token replayed to another replica is
caught only if they share the cache.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis

from service.config import Settings


class ReplayCacheUnavailable(Exception):
    """The cache could not answer; the caller must refuse the token (fail closed)."""


class ReplayCache(Protocol):
    def add_if_absent(self, iss: str, jti: str, ttl_seconds: int) -> bool:
        """Record (iss, jti) for ``ttl_seconds``; False when it was already recorded (a replay).

        Raises ReplayCacheUnavailable when the answer is unknown.
        """
        ...

    def health(self) -> bool:
        """Whether the cache can answer now (readiness probe)."""
        ...


def replay_key(iss: str, jti: str) -> str:
    """A fixed-length key: iss and jti are caller-chosen strings, so no delimiter could be trusted."""
    return hashlib.sha256(json.dumps([iss, jti]).encode("utf-8")).hexdigest()


class MemoryReplayCache:
    """Thread-safe, expiring, in-process replay cache (one process only)."""

    # Sweep expired entries at most this often, so the dict stays bounded by live tokens.
    _SWEEP_INTERVAL_SECONDS = 30.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expires_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def add_if_absent(self, iss: str, jti: str, ttl_seconds: int) -> bool:
        key = replay_key(iss, jti)
        with self._lock:
            now = self._clock()
            if now - self._last_sweep >= self._SWEEP_INTERVAL_SECONDS:
                self._expires_at = {k: t for k, t in self._expires_at.items() if t > now}
                self._last_sweep = now
            expires_at = self._expires_at.get(key)
            if expires_at is not None and expires_at > now:
                return False
            self._expires_at[key] = now + max(1, ttl_seconds)
            return True

    def health(self) -> bool:
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expires_at)


class RedisReplayCache:
    """Replay cache shared through Redis: one atomic ``SET key 1 NX EX ttl`` per token."""

    def __init__(
        self,
        redis_url: str,
        key_prefix: str = "islet-cds:jti:",
        socket_timeout_seconds: float = 0.5,
        client: redis.Redis | None = None,
    ) -> None:
        self._prefix = key_prefix
        self._client: redis.Redis = client or redis.Redis.from_url(
            redis_url,
            socket_timeout=socket_timeout_seconds,
            socket_connect_timeout=socket_timeout_seconds,
        )

    def add_if_absent(self, iss: str, jti: str, ttl_seconds: int) -> bool:
        try:
            # NX makes check-and-record one atomic step, so two replicas receiving the same token at
            # the same instant cannot both accept it.
            created: Any = self._client.set(self._prefix + replay_key(iss, jti), 1, nx=True, ex=max(1, ttl_seconds))
        except redis.RedisError as exc:
            raise ReplayCacheUnavailable(type(exc).__name__) from exc
        return bool(created)

    def health(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False


def make_replay_cache(settings: Settings) -> ReplayCache:
    """Redis when ``settings.redis_url`` is set (shared by replicas), else in-process."""
    if settings.redis_url:
        return RedisReplayCache(settings.redis_url)
    return MemoryReplayCache()
