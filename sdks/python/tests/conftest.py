"""Fixtures: one real Capsule server for the whole session, a client for it,
and fresh sandboxes per test."""

from __future__ import annotations

import os
from typing import Iterator

import pytest
from capsule_server import CapsuleServer

from capsule_sdk import Capsule, CapsuleClient, CapsuleError

# Small limits so the payload and output-cap tests are cheap.
MAX_REQUEST_BYTES = 4 << 20
OUTPUT_LIMIT = 64 << 10
# Snapshots, forks, volumes and disk limits need btrfs storage, which needs
# root. As root, ask for it outright: `--storage auto` would quietly fall back
# to plain directories when btrfs cannot be set up, and those tests would then
# fail far from the cause, while `--storage btrfs` makes the server refuse to
# start and say why.
STORAGE_ARGS = ["--storage", "btrfs"] if os.geteuid() == 0 else []


@pytest.fixture(scope="session")
def server() -> Iterator[CapsuleServer]:
    srv = CapsuleServer(
        args=["--max-request-bytes", str(MAX_REQUEST_BYTES), "--output-limit", str(OUTPUT_LIMIT), *STORAGE_ARGS]
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def client(server: CapsuleServer) -> Iterator[CapsuleClient]:
    with CapsuleClient(server.url) as c:
        yield c


def _discard(capsule: Capsule) -> None:
    try:
        capsule.delete()
    except CapsuleError:
        pass


@pytest.fixture
def capsule(client: CapsuleClient) -> Iterator[Capsule]:
    """A fresh sandbox from the base template."""
    c = client.create("base", ttl_ms=300_000)
    yield c
    _discard(c)


@pytest.fixture
def py_capsule(client: CapsuleClient) -> Iterator[Capsule]:
    """A fresh sandbox from the python template."""
    c = client.create("python", ttl_ms=300_000)
    yield c
    _discard(c)
