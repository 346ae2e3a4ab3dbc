"""API keys, against a server started with --api-keys."""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest
from capsule_server import CapsuleServer, server_supports

from capsule_sdk import AsyncCapsuleClient, Capsule, CapsuleClient, UnauthorizedError

KEY = "sdk-test-key-1"

pytestmark = pytest.mark.skipif(
    not server_supports("--api-keys"), reason="this capsule binary has no --api-keys option"
)


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[CapsuleServer]:
    with CapsuleServer(args=["--api-keys", KEY], api_key=KEY) as srv:
        yield srv


def test_requests_without_a_key_are_unauthorized(keyed_server: CapsuleServer) -> None:
    with CapsuleClient(keyed_server.url) as client:
        with pytest.raises(UnauthorizedError) as e:
            client.list()
        assert e.value.kind == "unauthorized" and e.value.code == -32014
        assert "API key" in str(e.value)
        # /health stays open.
        assert client.health()["status"] == "ok"


def test_listings_without_a_key_are_unauthorized(keyed_server: CapsuleServer) -> None:
    # Methods without parameters can still be refused: the typed methods
    # raise UnauthorizedError with the server's message.
    with CapsuleClient(keyed_server.url) as client:
        for call in (client.list_snapshots, client.list_volumes, client.pools):
            with pytest.raises(UnauthorizedError, match="API key") as e:
                call()
            assert e.value.kind == "unauthorized" and e.value.code == -32014
    with CapsuleClient(keyed_server.url, api_key=KEY) as client:
        assert isinstance(client.list_snapshots(), list)
        assert isinstance(client.list_volumes(), list)
        assert client.pools() == []


def test_a_wrong_key_is_unauthorized(keyed_server: CapsuleServer) -> None:
    with CapsuleClient(keyed_server.url, api_key="wrong") as client:
        with pytest.raises(UnauthorizedError, match="not valid"):
            client.templates()


def test_the_right_key_works_for_rpc_and_the_terminal(keyed_server: CapsuleServer) -> None:
    with CapsuleClient(keyed_server.url, api_key=KEY) as client:
        with client.create() as capsule:
            assert capsule.exec("echo keyed").stdout == "keyed\n"
            with capsule.terminal() as term:
                term.send("echo $((40 + 2))\n")
                term.expect("42")
            # The same sandbox's terminal without the key is refused.
            with CapsuleClient(keyed_server.url) as anonymous:
                ghost = Capsule(
                    anonymous,
                    {
                        "id": capsule.id,
                        "template": "base",
                        "created_at": "2024-01-01T00:00:00Z",
                        "expires_at": "2024-01-01T00:00:00Z",
                    },
                )
                with pytest.raises(UnauthorizedError):
                    ghost.terminal()


def test_async_client_sends_the_key(keyed_server: CapsuleServer) -> None:
    async def main() -> str:
        async with AsyncCapsuleClient(keyed_server.url, api_key=KEY) as client:
            async with client.create() as capsule:
                async with capsule.terminal() as term:
                    await term.send("echo $((6 * 7))\n")
                    await term.expect("42")
                return (await capsule.run("echo ok")).stdout

    assert asyncio.run(main()) == "ok\n"
