"""The jti replay cache shared through Redis (two app instances), and failing closed without it.

Uses the Redis at 127.0.0.1:6379, database 15, under a random key prefix that is deleted afterwards;
skipped (with the connection error as the reason) only when that Redis cannot be reached.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from service.trust.replay import MemoryReplayCache, RedisReplayCache, make_replay_cache
from service.trust.verify import Authenticator, AuthError
from tests.trust_tokens import AUDIENCE, ISS, claims, issuers_with, make_key, settings, sign

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = f"islet-cds-test:{uuid.uuid4().hex}:"
    yield prefix
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def test_replay_is_refused_across_two_instances_sharing_redis(redis_prefix: str) -> None:
    key = make_key("ES384")
    issuers = issuers_with({"iss": ISS, "jwks": {"keys": [key.public_jwk]}, "fhir_servers": []})
    # Two app instances: separate Authenticators and separate Redis connections, one Redis.
    first = Authenticator(settings(), issuers, RedisReplayCache(REDIS_URL, key_prefix=redis_prefix))
    second = Authenticator(settings(), issuers, RedisReplayCache(REDIS_URL, key_prefix=redis_prefix))
    token = sign(key, claims())

    first.authenticate(f"Bearer {token}", AUDIENCE)
    with pytest.raises(AuthError) as caught:
        second.authenticate(f"Bearer {token}", AUDIENCE)

    assert "already used" in caught.value.diagnostics
    # A fresh token (new jti) still passes on the second instance.
    second.authenticate(f"Bearer {sign(key, claims())}", AUDIENCE)


def test_redis_entry_expires_with_the_token(redis_prefix: str) -> None:
    cache = RedisReplayCache(REDIS_URL, key_prefix=redis_prefix)
    assert cache.health() is True
    assert cache.add_if_absent(ISS, "jti-1", ttl_seconds=120) is True
    assert cache.add_if_absent(ISS, "jti-1", ttl_seconds=120) is False
    client = redis.Redis.from_url(REDIS_URL)
    [stored] = list(client.scan_iter(match=redis_prefix + "*"))
    assert 0 < client.ttl(stored) <= 120


def test_redis_outage_fails_closed() -> None:
    # Nothing listens on port 1: a real connection failure, not a mock.
    key = make_key("ES384")
    issuers = issuers_with({"iss": ISS, "jwks": {"keys": [key.public_jwk]}, "fhir_servers": []})
    authenticator = Authenticator(settings(), issuers, RedisReplayCache("redis://127.0.0.1:1/15"))
    with pytest.raises(AuthError) as caught:
        authenticator.authenticate(f"Bearer {sign(key, claims())}", AUDIENCE)
    assert "replay cache unavailable" in caught.value.diagnostics
    assert authenticator.replay_cache.health() is False


def test_make_replay_cache_picks_redis_by_url() -> None:
    assert isinstance(make_replay_cache(settings()), MemoryReplayCache)
    assert isinstance(make_replay_cache(settings(redis_url=REDIS_URL)), RedisReplayCache)


def test_memory_cache_forgets_an_entry_after_its_ttl() -> None:
    now = [0.0]
    cache = MemoryReplayCache(clock=lambda: now[0])
    assert cache.add_if_absent(ISS, "jti-1", ttl_seconds=60)
    assert not cache.add_if_absent(ISS, "jti-1", ttl_seconds=60)
    now[0] = 61.0
    assert cache.add_if_absent(ISS, "jti-1", ttl_seconds=60)
    # Expired entries of other tokens are swept, so memory is bounded by live tokens.
    cache.add_if_absent(ISS, "jti-2", ttl_seconds=1)
    now[0] = 200.0
    cache.add_if_absent(ISS, "jti-3", ttl_seconds=60)
    assert len(cache) == 1
