"""
A Redis that wants a password (``requirepass``), reached with a URL that has
none, or a wrong one: every error says so in one line, names the Redis and
how to fix the URL, and never shows a password. Against private servers only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator

import pytest
import redis
import redis.exceptions

from relay.testing import RedisServer, RedisServerUnavailable
from relay.transport import TransportError
from relay.transport.base import Outgoing
from relay.transport.redis import AsyncRedisTransport, RedisTransport, translated

# Characters a URL must escape, so that the servers' URLs have to get it right.
PASSWORD = "s3cret:p@ss/w0rd"
WRONG = "wr0ng-pa55"
UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def locked() -> Iterator[RedisServer]:
    """A private Redis started with --requirepass PASSWORD."""
    try:
        server = RedisServer(password=PASSWORD).start()
    except RedisServerUnavailable as exc:
        if os.environ.get("RELAY_REQUIRE_REDIS") == "1":
            pytest.fail(f"RELAY_REQUIRE_REDIS=1 but no Redis server could be started: {exc}")
        pytest.skip(f"no redis-server: {exc}")
    with server:
        yield server


def with_credentials(server: RedisServer, credentials: str) -> str:
    return f"redis://{credentials}@{server.host}:{server.port}/0"


BAD_URLS = {
    "no password": lambda server: server.url_without_password,
    "wrong password": lambda server: with_credentials(server, f":{WRONG}"),
    "unknown user": lambda server: with_credentials(server, f"nobody:{WRONG}"),
    "user, no password": lambda server: with_credentials(server, "nobody"),
}


def assert_explains_credentials(message: str, server: RedisServer | None = None) -> None:
    """One line: Redis refused, which Redis, and the URL to write instead."""
    assert len(message.splitlines()) == 1 and "\r" not in message, message
    assert "refused the credentials" in message, message
    assert "put the password, and the ACL user if there is one, in the URL" in message, message
    for secret in (PASSWORD, urllib.parse.quote(PASSWORD, safe=""), WRONG):
        assert secret not in message, message
    if server is not None:
        assert message.startswith(
            f"Redis at {server.url_without_password} refused the credentials ("
        ), message
        assert message.endswith(f"redis://user:password@{server.host}:{server.port}/0"), message


# -- relay.testing.RedisServer(password=...) ----------------------------------------


@pytest.mark.redis
def test_a_redis_server_with_a_password(locked: RedisServer) -> None:
    quoted = urllib.parse.quote(PASSWORD, safe="")
    assert locked.url == f"redis://:{quoted}@{locked.host}:{locked.port}/0"
    assert locked.url_without_password == f"redis://{locked.host}:{locked.port}/0"
    assert locked.ping()
    with redis.Redis.from_url(locked.url) as client:
        assert client.ping()
    with (
        redis.Redis.from_url(locked.url_without_password) as client,
        pytest.raises(redis.exceptions.AuthenticationError),
    ):
        client.ping()
    # ping() does authenticate: without the password the same server does not answer it.
    stranger = RedisServer(port=locked.port)
    try:
        assert stranger.url == stranger.url_without_password == locked.url_without_password
        assert not stranger.ping()
    finally:
        stranger.__exit__(None, None, None)
    with pytest.raises(ValueError, match="empty"):
        RedisServer(password="")


# -- the threaded transport ------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("kind", list(BAD_URLS))
def test_refused_credentials_are_one_line_with_the_fix(locked: RedisServer, kind: str) -> None:
    transport = RedisTransport(BAD_URLS[kind](locked))
    try:
        assert transport.description == locked.url_without_password
        with pytest.raises(TransportError) as check:
            transport.check()
        assert_explains_credentials(str(check.value), locked)
        assert isinstance(check.value.__cause__, redis.exceptions.RedisError)
        # Every command says the same, not only check().
        with pytest.raises(TransportError) as publish:
            transport.publish_many([Outgoing("a", b"1"), Outgoing("b", b"2")])
        assert_explains_credentials(str(publish.value), locked)
        with pytest.raises(TransportError) as read:
            transport.get_value("relay:auth:x")
        assert_explains_credentials(str(read.value), locked)
        # The listener's connection too (whether or not it names the Redis).
        subscription = transport.subscription()
        with pytest.raises(TransportError) as subscribe:
            subscription.subscribe(["a"])
        assert_explains_credentials(str(subscribe.value))
        subscription.close()
    finally:
        transport.close()


@pytest.mark.redis
def test_the_right_password_works(locked: RedisServer) -> None:
    transport = RedisTransport(locked.url)
    try:
        assert PASSWORD not in transport.description
        assert urllib.parse.quote(PASSWORD, safe="") not in transport.description
        transport.check()
        subscription = transport.subscription()
        subscription.subscribe(["a"])
        assert transport.publish("a", b"1") == 1
        subscription.close()
        transport.set_value("relay:auth:x", "y")
        assert transport.get_value("relay:auth:x") == "y"
    finally:
        transport.close()


@pytest.mark.redis
def test_a_password_for_a_redis_without_one(private_redis: RedisServer) -> None:
    # RESP2's AUTH (unlike RESP3's HELLO AUTH) fails on a Redis without a password.
    url = f"redis://:{WRONG}@{private_redis.host}:{private_redis.port}/0?protocol=2"
    transport = RedisTransport(url)
    try:
        with pytest.raises(TransportError) as check:
            transport.check()
    finally:
        transport.close()
    message = str(check.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"Redis at {private_redis.url} has no password ("), message
    assert message.endswith("take the password out of the URL"), message
    assert WRONG not in message


def test_unreachable_redis_is_named_by_check() -> None:
    transport = RedisTransport(UNREACHABLE)
    try:
        with pytest.raises(TransportError) as check:
            transport.check()
    finally:
        transport.close()
    message = str(check.value)
    assert message.startswith(f"cannot reach Redis at {UNREACHABLE}: ConnectionError: "), message
    assert len(message.splitlines()) == 1, message


# -- the asyncio transport -------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("kind", list(BAD_URLS))
def test_async_refused_credentials_are_one_line_with_the_fix(
    locked: RedisServer, kind: str
) -> None:
    async def attempt() -> list[str]:
        transport = AsyncRedisTransport(BAD_URLS[kind](locked))
        messages = []
        try:
            assert transport.description == locked.url_without_password
            with pytest.raises(TransportError) as check:
                await transport.check()
            messages.append(str(check.value))
            with pytest.raises(TransportError) as publish:
                await transport.publish_many([Outgoing("a", b"1")])
            messages.append(str(publish.value))
            with pytest.raises(TransportError) as read:
                await transport.get_value("relay:auth:x")
            messages.append(str(read.value))
        finally:
            await transport.close()
        return messages

    for message in asyncio.run(attempt()):
        assert_explains_credentials(message, locked)


@pytest.mark.redis
def test_async_the_right_password_works(locked: RedisServer) -> None:
    async def attempt() -> str | None:
        transport = AsyncRedisTransport(locked.url)
        try:
            assert PASSWORD not in transport.description
            await transport.check()
            await transport.set_value("relay:auth:async", "z")
            return await transport.get_value("relay:auth:async")
        finally:
            await transport.close()

    assert asyncio.run(attempt()) == "z"


def test_async_unreachable_redis_is_named_by_check() -> None:
    async def attempt() -> str:
        transport = AsyncRedisTransport(UNREACHABLE)
        try:
            with pytest.raises(TransportError) as check:
                await transport.check()
        finally:
            await transport.close()
        return str(check.value)

    message = asyncio.run(attempt())
    assert message.startswith(f"cannot reach Redis at {UNREACHABLE}: ConnectionError: "), message


# -- translated(), error by error --------------------------------------------------------

DESCRIPTION = "redis://db.example:6390/3"

REFUSALS = {
    "NOAUTH, as redis-py raises it": redis.exceptions.AuthenticationError(
        "Authentication required.", status_code="NOAUTH"
    ),
    "NOAUTH, unparsed": redis.exceptions.ResponseError("NOAUTH Authentication required."),
    "WRONGPASS, unparsed": redis.exceptions.ResponseError(
        "WRONGPASS invalid username-password pair or user is disabled."
    ),
    "HELLO": redis.exceptions.ResponseError(
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
        "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
        "select the RESP protocol version at the same time"
    ),
    "HELLO, without its code": redis.exceptions.ResponseError(
        "-ERR HELLO needs authentication\r\nfirst"
    ),
    "invalid password": redis.exceptions.AuthenticationError("invalid password"),
    "AUTH's arguments": redis.exceptions.AuthenticationWrongNumberOfArgsError(
        "wrong number of arguments for 'auth' command"
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_translated_recognises_refused_credentials(case: str) -> None:
    with pytest.raises(TransportError) as caught, translated(DESCRIPTION):
        raise REFUSALS[case]
    message = str(caught.value)
    assert_explains_credentials(message)
    assert message.startswith(f"Redis at {DESCRIPTION} refused the credentials ("), message
    assert message.endswith("in the URL: redis://user:password@db.example:6390/3"), message
    assert caught.value.__cause__ is REFUSALS[case]
    # Without a description: the same, without naming the Redis.
    with pytest.raises(TransportError) as anonymous, translated():
        raise REFUSALS[case]
    assert str(anonymous.value).startswith("Redis refused the credentials (")
    assert_explains_credentials(str(anonymous.value))


def test_translated_keeps_the_reason_short() -> None:
    with pytest.raises(TransportError) as caught, translated(DESCRIPTION):
        raise REFUSALS["HELLO"]
    assert "(NOAUTH HELLO must be called with the client already authenticated);" in str(
        caught.value
    )
    with pytest.raises(TransportError) as caught, translated(DESCRIPTION):
        raise REFUSALS["NOAUTH, as redis-py raises it"]
    assert "(NOAUTH Authentication required.);" in str(caught.value)


def test_translated_leaves_other_errors_as_they_were() -> None:
    with (
        pytest.raises(TransportError, match=r"^Redis refused: WRONGTYPE Operation"),
        translated(DESCRIPTION),
    ):
        raise redis.exceptions.ResponseError("WRONGTYPE Operation against a key")
    with pytest.raises(TransportError) as caught, translated(DESCRIPTION):
        raise redis.exceptions.ConnectionError("Error 111 connecting.\nConnection refused.")
    # Only check() (reaching=True) names the Redis in a connection error.
    assert str(caught.value) == "ConnectionError: Error 111 connecting. Connection refused."
    with pytest.raises(TransportError) as caught, translated(DESCRIPTION, reaching=True):
        raise redis.exceptions.TimeoutError("Timeout reading from socket")
    assert str(caught.value) == (
        f"cannot reach Redis at {DESCRIPTION}: TimeoutError: Timeout reading from socket"
    )
    ours = TransportError("Redis did not confirm SUBSCRIBE within 10 s")
    with pytest.raises(TransportError) as caught, translated(DESCRIPTION):
        raise ours
    assert caught.value is ours
    with pytest.raises(KeyError), translated(DESCRIPTION):
        raise KeyError("not Redis")


# -- the relay command -------------------------------------------------------------------


def relay_send(url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RELAY_NAMESPACE")}
    return subprocess.run(
        [sys.executable, "-m", "relay", "send", "auth.test", "n=1", "--redis-url", url],
        capture_output=True,
        text=True,
        timeout=90,
        env={**env, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["no password", "wrong password"])
def test_relay_send_says_how_to_fix_the_url(locked: RedisServer, kind: str) -> None:
    result = relay_send(BAD_URLS[kind](locked))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("relay: "), lines[0]
    assert_explains_credentials(lines[0].removeprefix("relay: "), locked)


@pytest.mark.redis
def test_relay_send_with_the_password(locked: RedisServer) -> None:
    result = relay_send(locked.url)
    assert result.returncode == 0, result.stderr
    assert "sent auth.test" in result.stdout
