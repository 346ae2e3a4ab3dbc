"""The asyncio client against a real server. Each test runs its own event
loop with asyncio.run, so no pytest plugin is needed."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import timedelta
from typing import Any, Awaitable, Callable, TypeVar

import pytest
from capsule_server import CapsuleServer, free_port
from conftest import MAX_REQUEST_BYTES

from capsule_sdk import (
    AlreadyExistsError,
    AsyncCapsule,
    AsyncCapsuleClient,
    AsyncTerminal,
    CapsuleConnectionError,
    ExecResult,
    FileEntry,
    FileNotFoundInSandboxError,
    InvalidParamsError,
    PathOutsideSandboxError,
    PauseResult,
    PayloadTooLargeError,
    SandboxExpiredError,
    SandboxInfo,
    SandboxNotFoundError,
    SandboxStats,
    SnapshotInfo,
    TemplateNotFoundError,
    TerminalClosedError,
    UnsupportedError,
    VolumeInfo,
    VolumeMount,
)

T = TypeVar("T")


def run_async(server: CapsuleServer, body: Callable[[AsyncCapsuleClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AsyncCapsuleClient(server.url) as client:
            return await body(client)

    return asyncio.run(main())


def test_create_run_and_cleanup(server: CapsuleServer) -> None:
    async def body(client: AsyncCapsuleClient) -> str:
        async with client.create("python", metadata={"async": "yes"}) as capsule:
            assert isinstance(capsule, AsyncCapsule)
            result = await capsule.run("print(sum(range(10)))")
            assert isinstance(result, ExecResult)
            assert result.stdout == "45\n"
            assert capsule.id in server.sandbox_ids()
            return capsule.id

    sandbox_id = run_async(server, body)
    assert sandbox_id not in server.sandbox_ids()


def test_await_create_and_every_method(server: CapsuleServer) -> None:
    async def body(client: AsyncCapsuleClient) -> None:
        capsule = await client.create(ttl_ms=120_000, cpu=0.5, memory_mb=200, env={"E": "v"})
        try:
            assert capsule.expires_at - capsule.created_at == timedelta(minutes=2)
            info = await capsule.info()
            assert isinstance(info, SandboxInfo)
            assert (info.state, info.cpu, info.memory_mb) == ("running", 0.5, 200)

            r = await capsule.exec("echo $E; pwd; cat", cwd="/tmp", stdin="in", env={"F": "f"})
            assert r.stdout == "v\n/tmp\nin"
            assert (await capsule.exec(["id", "-u"], user="root")).stdout == "0\n"
            assert (await capsule.exec("sleep 10", timeout_ms=300)).timed_out
            assert (await capsule.run("echo $((2+3))")).stdout == "5\n"

            w = await capsule.write_file("dir/a.bin", bytes(range(256)), mode=0o600)
            assert (w.path, w.size) == ("/workspace/dir/a.bin", 256)
            assert await capsule.read_file("dir/a.bin") == bytes(range(256))
            await capsule.write_file("t.txt", "héllo")
            assert await capsule.read_file_text("t.txt") == "héllo"
            entries = await capsule.list_dir()
            assert {e.name for e in entries} == {"dir", "t.txt"}
            assert all(isinstance(e, FileEntry) for e in entries)
            st = await capsule.stat("dir/a.bin")
            assert (st.mode, st.size) == (0o600, 256)
            made = await capsule.make_dir("x/y")
            assert made.path == "/workspace/x/y"
            await capsule.remove("x")
            assert "x" not in {e.name for e in await capsule.list_dir("/workspace")}

            new = await capsule.set_timeout(600_000)
            assert new == capsule.expires_at
            assert (await capsule.info()).expires_at == new

            again = await client.get(capsule.id)
            assert again.id == capsule.id
            assert capsule.id in {s.id for s in await client.list()}
            assert [s.id for s in await client.list(metadata={"none": "such"})] == []
            assert {t.name for t in await client.templates()} >= {"base", "python", "node"}
            assert (await client.health())["status"] == "ok"
        finally:
            await capsule.delete()
        with pytest.raises(SandboxNotFoundError):
            await client.get(capsule.id)

    run_async(server, body)


def test_pause_resume_and_stats(server: CapsuleServer) -> None:
    async def body(client: AsyncCapsuleClient) -> None:
        async with client.create(runtime="native", disk_mb=64) as capsule:
            await capsule.write_file("f", "x")
            paused = await capsule.pause()
            assert isinstance(paused, PauseResult)
            assert (paused.id, paused.state) == (capsule.id, "paused")
            assert (await capsule.info()).state == "paused"
            stats = await capsule.stats()
            assert isinstance(stats, SandboxStats)
            assert stats.state == "paused" and stats.disk_limit_bytes == 64 << 20
            assert isinstance(stats.cpu_ns, int) and isinstance(stats.memory_bytes, int)
            # A call resumes it.
            assert await capsule.read_file_text("f") == "x"
            assert (await capsule.info()).state == "running"
            await capsule.pause()
            resumed = await capsule.resume()
            assert (resumed.state, resumed.expires_at) == ("running", capsule.expires_at)
            assert (await capsule.info()).runtime == "native"
            assert await client.pools() == []
        with pytest.raises(SandboxNotFoundError, match=capsule.id):
            await capsule.pause()
        with pytest.raises(SandboxNotFoundError, match=capsule.id):
            await capsule.resume()
        with pytest.raises(SandboxNotFoundError, match=capsule.id):
            await capsule.stats()
        with pytest.raises(InvalidParamsError, match="auto_pause_ms"):
            await client.create(auto_pause_ms=1, pause_on_expiry=True)
        with pytest.raises(UnsupportedError, match="no-such-runtime"):
            await client.create(runtime="no-such-runtime")

    run_async(server, body)


def test_snapshots_forks_and_volumes(server: CapsuleServer) -> None:
    suffix = uuid.uuid4().hex[:10]
    snap_name, vol_name = f"async-snap-{suffix}", f"async-vol-{suffix}"

    async def body(client: AsyncCapsuleClient) -> None:
        vol = await client.create_volume(vol_name, 32)
        assert isinstance(vol, VolumeInfo) and vol.size_bytes == 32 << 20
        async with client.create(volumes=[VolumeMount(vol_name, "/vol")]) as source:
            await source.write_file("/vol/v.txt", "in the volume")
            await source.write_file("own.txt", "in the sandbox")
            assert [v.used_by for v in await client.list_volumes() if v.name == vol_name] == [[source.id]]
            with pytest.raises(InvalidParamsError, match="mounted"):
                await client.delete_volume(vol_name)

            snap = await source.snapshot(name=snap_name)
            assert isinstance(snap, SnapshotInfo) and snap.name == snap_name and snap.source == source.id
            with pytest.raises(AlreadyExistsError, match=snap_name):
                await source.snapshot(name=snap_name)
            assert snap in await client.list_snapshots()
            async with client.create(snapshot=snap_name) as restored:
                assert await restored.read_file_text("own.txt") == "in the sandbox"

            forks = await source.fork(count=2)
            try:
                assert len(forks) == 2 and all(isinstance(f, AsyncCapsule) for f in forks)
                for f in forks:
                    assert await f.read_file_text("own.txt") == "in the sandbox"
                    # Forks mount the source's volumes too.
                    assert await f.read_file_text("/vol/v.txt") == "in the volume"
            finally:
                for f in forks:
                    await f.delete()
            with pytest.raises(InvalidParamsError, match="count"):
                await source.fork(count=0)
        await client.delete_snapshot(snap_name)
        assert snap_name not in {s.name for s in await client.list_snapshots()}
        with pytest.raises(InvalidParamsError, match=snap_name):
            await client.delete_snapshot(snap_name)
        await client.delete_volume(vol_name)
        assert vol_name not in {v.name for v in await client.list_volumes()}
        with pytest.raises(InvalidParamsError, match=vol_name):
            await client.delete_volume(vol_name)
        with pytest.raises(InvalidParamsError, match="size_mb"):
            await client.create_volume(vol_name, 0)

    run_async(server, body)


def test_concurrent_calls(server: CapsuleServer) -> None:
    async def body(client: AsyncCapsuleClient) -> float:
        async with client.create() as capsule:
            started = time.monotonic()
            results = await asyncio.gather(*(capsule.exec(f"sleep 1; echo {i}") for i in range(5)))
            assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]
            return time.monotonic() - started

    elapsed = run_async(server, body)
    # Five 1-second commands at once take far less than five seconds.
    assert elapsed < 4, elapsed


def test_errors(server: CapsuleServer) -> None:
    async def body(client: AsyncCapsuleClient) -> None:
        with pytest.raises(SandboxNotFoundError):
            await client.get("zzzzzzzz")
        with pytest.raises(TemplateNotFoundError):
            await client.create("cobol")
        async with client.create() as capsule:
            with pytest.raises(FileNotFoundInSandboxError):
                await capsule.read_file("nope")
            with pytest.raises(PathOutsideSandboxError):
                await capsule.list_dir("/etc/../../../etc")
            for i in range(3):
                with pytest.raises(PayloadTooLargeError):
                    await capsule.write_file("big", b"\0" * MAX_REQUEST_BYTES)
                assert (await capsule.exec(f"echo {i}")).stdout == f"{i}\n"
        short = await client.create(ttl_ms=1_000)
        await asyncio.sleep(2.5)
        with pytest.raises(SandboxExpiredError):
            await short.exec("true")
        async with short:  # leaving tolerates the expired sandbox
            pass

    run_async(server, body)

    async def unreachable() -> None:
        async with AsyncCapsuleClient(f"http://127.0.0.1:{free_port()}") as client:
            await client.list()

    with pytest.raises(CapsuleConnectionError, match="cannot reach the Capsule server"):
        asyncio.run(unreachable())


def test_terminal(server: CapsuleServer) -> None:
    async def body(client: AsyncCapsuleClient) -> None:
        async with client.create() as capsule:
            async with capsule.terminal(cols=90, rows=20) as term:
                assert isinstance(term, AsyncTerminal)
                await term.send("echo hi\n")
                await term.expect(re.compile(r"[\r\n]hi\r\n"))
                await term.send("stty size\n")
                await term.expect(re.compile(r"\b20 90\b"))
                await term.resize(132, 43)
                await term.send("stty size\n")
                await term.expect(re.compile(r"\b43 132\b"))
            assert term.closed

            term = await capsule.terminal()
            await term.send("echo $((5 * 5)); exit 4\n")
            chunks = [chunk async for chunk in term]
            assert "25" in "".join(chunks)
            assert term.close_reason == "exit status 4"
            with pytest.raises(TerminalClosedError):
                await term.recv()

            # delete() closes terminals the capsule opened.
            open_term = await capsule.terminal()
            await open_term.send("echo $((7 * 7))\n")
            await open_term.expect("49")
        assert open_term.closed

    run_async(server, body)


def test_terminal_for_an_unknown_sandbox(server: CapsuleServer) -> None:
    async def body(client: AsyncCapsuleClient) -> Any:
        ghost = AsyncCapsule(
            client,
            {
                "id": "zzzzzzzz",
                "template": "base",
                "created_at": "2024-01-01T00:00:00Z",
                "expires_at": "2024-01-01T00:00:00Z",
            },
        )
        with pytest.raises(SandboxNotFoundError):
            await ghost.terminal()

    run_async(server, body)
