"""Pause and resume, snapshots, forks, volumes, stats, pools and the newer
create parameters, with the blocking client against a real server.

Snapshots, forks, volumes and disk limits need the server's btrfs storage,
which needs root (see conftest.STORAGE_ARGS).

Bad inputs are checked against the server itself: the SDK must raise the
class of the kind the server reports, carrying the server's own message and
data (the same request sent without the SDK gives the same error).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, List, Mapping, Type

import pytest
from capsule_server import CapsuleServer
from conftest import STORAGE_ARGS

from capsule_sdk import (
    AlreadyExistsError,
    Capsule,
    CapsuleClient,
    CapsuleError,
    InvalidParamsError,
    PauseResult,
    PoolInfo,
    SandboxInfo,
    SandboxNotFoundError,
    SandboxStats,
    SnapshotInfo,
    UnsupportedError,
    VolumeInfo,
    VolumeMount,
)

MIB = 1 << 20


def unique(prefix: str) -> str:
    """A snapshot or volume name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def server_error(server: CapsuleServer, method: str, params: Mapping[str, Any]) -> Dict[str, Any]:
    """The error the server answers to a request sent without the SDK."""
    answer = server.rpc(f"sandbox.v1.{method}", dict(params))
    assert "error" in answer, answer
    error: Dict[str, Any] = answer["error"]
    return error


def raises_server_error(
    server: CapsuleServer,
    cls: Type[CapsuleError],
    call: Callable[[], object],
    method: str,
    params: Mapping[str, Any],
) -> CapsuleError:
    """Runs the SDK ``call`` and checks it raises exactly ``cls`` with the
    kind, code, message and data the server gives the same raw request."""
    with pytest.raises(cls) as e:
        call()
    err = e.value
    assert type(err) is cls, repr(err)
    raw = server_error(server, method, params)
    assert err.message == raw["message"] and str(err) == raw["message"]
    assert err.code == raw["code"]
    assert err.kind == raw["data"]["kind"]
    assert err.data == raw["data"]
    return err


@pytest.fixture
def gone(client: CapsuleClient) -> Capsule:
    """A sandbox that was deleted."""
    capsule = client.create()
    capsule.delete()
    return capsule


@pytest.fixture
def created(client: CapsuleClient) -> Iterator[List[Capsule]]:
    """Sandboxes a test makes along the way, deleted after it."""
    made: List[Capsule] = []
    yield made
    for capsule in made:
        try:
            capsule.delete()
        except CapsuleError:
            pass


# -- pause and resume ----------------------------------------------------------


def test_pause_then_exec_resumes(capsule: Capsule) -> None:
    capsule.write_file("note.txt", "kept while paused")
    capsule.exec("sleep 600 >/dev/null 2>&1 &")
    r = capsule.pause()
    assert isinstance(r, PauseResult)
    assert (r.id, r.state) == (capsule.id, "paused")
    assert r.expires_at == capsule.expires_at and r.expires_at.tzinfo is not None
    assert capsule.info().state == "paused"
    # Pausing a paused sandbox does nothing.
    assert capsule.pause().state == "paused"
    # Any call that needs the sandbox resumes it; files and processes stayed.
    assert capsule.read_file_text("note.txt") == "kept while paused"
    assert capsule.exec("pgrep -x sleep >/dev/null && echo alive").stdout == "alive\n"
    assert capsule.info().state == "running"


def test_pause_then_resume(capsule: Capsule) -> None:
    capsule.pause()
    assert capsule.stats().state == "paused"
    r = capsule.resume()
    assert isinstance(r, PauseResult)
    assert (r.id, r.state) == (capsule.id, "running")
    assert capsule.expires_at == r.expires_at
    assert capsule.info().state == "running"
    # Resuming a running sandbox does nothing.
    assert capsule.resume().state == "running"
    assert capsule.exec("echo up").stdout == "up\n"


def test_pause_and_resume_errors(server: CapsuleServer, gone: Capsule) -> None:
    params = {"id": gone.id}
    err = raises_server_error(server, SandboxNotFoundError, gone.pause, "pause", params)
    assert gone.id in err.message
    raises_server_error(server, SandboxNotFoundError, gone.resume, "resume", params)


def test_auto_pause_ms(server: CapsuleServer, client: CapsuleClient) -> None:
    with client.create(auto_pause_ms=1_000) as capsule:
        capsule.write_file("f", "x")
        time.sleep(3)
        assert capsule.info().state == "paused"
        assert capsule.exec("cat f").stdout == "x"
        assert capsule.info().state == "running"
    raises_server_error(
        server, InvalidParamsError, lambda: client.create(auto_pause_ms=5), "create", {"auto_pause_ms": 5}
    )


def test_pause_on_expiry(client: CapsuleClient) -> None:
    with client.create(ttl_ms=1_000, pause_on_expiry=True) as capsule:
        capsule.write_file("f", "survives its end time")
        time.sleep(3)
        # Paused instead of deleted...
        assert capsule.info().state == "paused"
        # ...and a call brings it back with a fresh time to live.
        assert capsule.read_file_text("f") == "survives its end time"
        info = capsule.info()
        assert info.state == "running"
        assert info.expires_at > datetime.now(timezone.utc) + timedelta(minutes=1)


# -- snapshots -----------------------------------------------------------------


def test_snapshot_then_create_from_it(client: CapsuleClient, created: List[Capsule]) -> None:
    name = unique("snap")
    with client.create("python", metadata={"role": "source"}) as source:
        source.write_file("state.txt", "captured")
        snap = source.snapshot(name=name)
        assert isinstance(snap, SnapshotInfo)
        assert (snap.name, snap.source, snap.template) == (name, source.id, "python")
        assert snap.snapshot_id.startswith("snap-")
        assert isinstance(snap.size_bytes, int) and snap.size_bytes >= 0
        assert abs(snap.created_at - datetime.now(timezone.utc)) < timedelta(minutes=5)
        # Later changes of the source are not in the snapshot.
        source.write_file("state.txt", "changed later")

    # By name: the template is the snapshot's.
    by_name = client.create(snapshot=name)
    created.append(by_name)
    assert by_name.template == "python"
    assert by_name.read_file_text("state.txt") == "captured"
    assert by_name.run("print(open('state.txt').read())").stdout == "captured\n"
    # By id, giving the same template explicitly.
    by_id = client.create("python", snapshot=snap.snapshot_id)
    created.append(by_id)
    assert by_id.read_file_text("/workspace/state.txt") == "captured"
    # Each has its own copy.
    by_id.write_file("state.txt", "mine")
    assert by_name.read_file_text("state.txt") == "captured"


def test_list_and_delete_snapshots(client: CapsuleClient, capsule: Capsule) -> None:
    capsule.write_file("a", "1")
    named = capsule.snapshot(name=unique("listed"))
    unnamed = capsule.snapshot()
    assert unnamed.name is None and unnamed.snapshot_id != named.snapshot_id
    snapshots = client.list_snapshots()
    assert all(isinstance(s, SnapshotInfo) for s in snapshots)
    by_id = {s.snapshot_id: s for s in snapshots}
    assert by_id[named.snapshot_id] == named
    assert by_id[unnamed.snapshot_id] == unnamed
    # Oldest first.
    ids = [s.snapshot_id for s in snapshots]
    assert ids.index(named.snapshot_id) < ids.index(unnamed.snapshot_id)

    # A sandbox made from a snapshot keeps its files when the snapshot goes.
    with client.create(snapshot=unnamed.snapshot_id) as child:
        assert named.name is not None
        client.delete_snapshot(named.name)  # by name
        client.delete_snapshot(unnamed.snapshot_id)  # by id
        remaining = {s.snapshot_id for s in client.list_snapshots()}
        assert named.snapshot_id not in remaining and unnamed.snapshot_id not in remaining
        assert child.read_file_text("a") == "1"


def test_snapshot_errors(server: CapsuleServer, client: CapsuleClient, capsule: Capsule, gone: Capsule) -> None:
    err = raises_server_error(
        server,
        InvalidParamsError,
        lambda: capsule.snapshot(name="Not A Name"),
        "snapshot",
        {"id": capsule.id, "name": "Not A Name"},
    )
    assert "Not A Name" in err.message
    taken = unique("taken")
    capsule.snapshot(name=taken)
    try:
        err = raises_server_error(
            server, AlreadyExistsError, lambda: capsule.snapshot(name=taken), "snapshot", {"id": capsule.id, "name": taken}
        )
        assert taken in err.message
        # The snapshot is of a "base" sandbox: another template is refused.
        err = raises_server_error(
            server,
            InvalidParamsError,
            lambda: client.create("python", snapshot=taken),
            "create",
            {"template": "python", "snapshot": taken},
        )
        assert "base" in err.message
    finally:
        client.delete_snapshot(taken)
    raises_server_error(server, SandboxNotFoundError, gone.snapshot, "snapshot", {"id": gone.id})
    err = raises_server_error(
        server, InvalidParamsError, lambda: client.create(snapshot="no-such-snap"), "create", {"snapshot": "no-such-snap"}
    )
    assert "no-such-snap" in err.message
    err = raises_server_error(
        server,
        InvalidParamsError,
        lambda: client.delete_snapshot("no-such-snap"),
        "deleteSnapshot",
        {"snapshot": "no-such-snap"},
    )
    assert "no-such-snap" in err.message


# -- forks ---------------------------------------------------------------------


def test_fork(client: CapsuleClient, created: List[Capsule]) -> None:
    with client.create(metadata={"origin": "source"}, env={"FROM": "env"}) as source:
        source.write_file("shared.txt", "from the source")
        forks = source.fork(count=2, metadata={"copy": "yes"})
        created.extend(forks)
        assert len(forks) == 2
        assert all(isinstance(f, Capsule) for f in forks)
        assert len({source.id, forks[0].id, forks[1].id}) == 3
        for f in forks:
            assert f.template == "base"
            assert f.read_file_text("shared.txt") == "from the source"
            assert f.exec("echo $FROM").stdout == "env\n"
            info = f.info()
            assert isinstance(info, SandboxInfo)
            assert info.metadata == {"origin": "source", "copy": "yes"}
            assert info.state == "running"
        # Copies, not shared files.
        forks[0].write_file("shared.txt", "changed in fork 0")
        assert forks[1].read_file_text("shared.txt") == "from the source"
        assert source.read_file_text("shared.txt") == "from the source"
        # The source goes on.
        assert source.exec("echo still here").stdout == "still here\n"
        # Default: one copy, with the source's remaining time.
        (single,) = source.fork()
        created.append(single)
        # (Times are whole seconds, so rounding may add one.)
        assert abs(single.expires_at - source.expires_at) <= timedelta(seconds=1)
        (short,) = source.fork(ttl_ms=60_000)
        created.append(short)
        assert timedelta(seconds=55) < short.expires_at - datetime.now(timezone.utc) <= timedelta(seconds=61)


def test_fork_errors(server: CapsuleServer, capsule: Capsule, gone: Capsule) -> None:
    for count in (0, 65):
        err = raises_server_error(
            server, InvalidParamsError, lambda: capsule.fork(count=count), "fork", {"id": capsule.id, "count": count}
        )
        assert "count" in err.message and str(count) in err.message
    raises_server_error(server, SandboxNotFoundError, gone.fork, "fork", {"id": gone.id, "count": 1})


# -- volumes -------------------------------------------------------------------


def test_volume_shared_rw_then_ro(client: CapsuleClient, server: CapsuleServer) -> None:
    name = unique("vol")
    vol = client.create_volume(name, 64)
    assert isinstance(vol, VolumeInfo)
    assert (vol.name, vol.size_bytes, vol.used_by) == (name, 64 * MIB, [])
    assert abs(vol.created_at - datetime.now(timezone.utc)) < timedelta(minutes=5)
    try:
        assert {v.name: v for v in client.list_volumes()}[name] == vol
        with client.create(volumes=[VolumeMount(name, "/data")]) as writer:
            w = writer.exec("echo persisted > /data/out.txt && stat -c %U /data/out.txt")
            assert w.ok and w.stdout == "user\n", w
            assert {v.name: v for v in client.list_volumes()}[name].used_by == [writer.id]
            # Mounted read-only into a second sandbox, given as a mapping.
            with client.create(volumes=[{"name": name, "path": "/mnt/in", "read_only": True}]) as reader:
                assert reader.read_file_text("/mnt/in/out.txt") == "persisted\n"
                r = reader.exec("echo nope > /mnt/in/other.txt")
                assert r.exit_code != 0 and "Read-only file system" in r.stderr
                # Both writes and reads went to the same volume.
                assert writer.exec("ls /data").stdout == "out.txt\n"
                users = {v.name: v for v in client.list_volumes()}[name].used_by
                assert sorted(users) == sorted([writer.id, reader.id])
                # Refused while mounted; the error lists who mounts it.
                err = raises_server_error(
                    server, InvalidParamsError, lambda: client.delete_volume(name), "deleteVolume", {"name": name}
                )
                assert sorted(err.data["used_by"]) == sorted([writer.id, reader.id])
        # The files outlive the sandboxes.
        with client.create(volumes=[VolumeMount(name, "/again", read_only=True)]) as later:
            assert later.read_file_text("/again/out.txt") == "persisted\n"
    finally:
        client.delete_volume(name)
    assert name not in {v.name for v in client.list_volumes()}


def test_volume_errors(server: CapsuleServer, client: CapsuleClient) -> None:
    err = raises_server_error(
        server,
        InvalidParamsError,
        lambda: client.create_volume("Bad Name!", 16),
        "createVolume",
        {"name": "Bad Name!", "size_mb": 16},
    )
    assert "Bad Name!" in err.message
    name = unique("dup")
    raises_server_error(
        server, InvalidParamsError, lambda: client.create_volume(name, 0), "createVolume", {"name": name, "size_mb": 0}
    )
    client.create_volume(name, 16)
    try:
        err = raises_server_error(
            server,
            AlreadyExistsError,
            lambda: client.create_volume(name, 16),
            "createVolume",
            {"name": name, "size_mb": 16},
        )
        assert name in err.message
        # Volume paths are absolute and not the sandbox's own directories.
        bad_path = [{"name": name, "path": "/tmp/x", "read_only": False}]
        err = raises_server_error(
            server,
            InvalidParamsError,
            lambda: client.create(volumes=[VolumeMount(name, "/tmp/x")]),
            "create",
            {"volumes": bad_path},
        )
        assert "/tmp/x" in err.message
    finally:
        client.delete_volume(name)
    missing = [{"name": "no-such-volume", "path": "/data", "read_only": False}]
    err = raises_server_error(
        server,
        InvalidParamsError,
        lambda: client.create(volumes=[VolumeMount("no-such-volume", "/data")]),
        "create",
        {"volumes": missing},
    )
    assert "no-such-volume" in err.message
    err = raises_server_error(
        server,
        InvalidParamsError,
        lambda: client.delete_volume("no-such-volume"),
        "deleteVolume",
        {"name": "no-such-volume"},
    )
    assert "no-such-volume" in err.message
    with pytest.raises(TypeError, match="VolumeMount"):
        client.create(volumes=["not-a-volume"])  # type: ignore[list-item]


# -- stats, disk limits, runtimes ----------------------------------------------


def test_stats(capsule: Capsule) -> None:
    capsule.write_file("blob", b"\0" * (2 * MIB))
    s = capsule.stats()
    assert isinstance(s, SandboxStats)
    assert (s.id, s.state) == (capsule.id, "running")
    assert s.memory_limit_bytes == 512 * MIB
    assert s.pids_limit == 256
    for value in (s.cpu_ns, s.memory_bytes, s.memory_peak_bytes, s.pids, s.disk_bytes, s.disk_limit_bytes):
        assert isinstance(value, int) and not isinstance(value, bool), s
    assert s.cpu_ns is not None and s.cpu_ns > 0
    assert s.pids is not None and s.pids >= 1
    assert s.memory_peak_bytes is not None and s.memory_bytes is not None
    assert s.memory_peak_bytes >= s.memory_bytes > 0
    assert s.disk_bytes is not None and s.disk_bytes >= 2 * MIB
    assert s.disk_limit_bytes == 10240 * MIB
    # No network, no network figures.
    assert s.network_rx_bytes is None and s.network_tx_bytes is None


def test_stats_errors(server: CapsuleServer, gone: Capsule) -> None:
    raises_server_error(server, SandboxNotFoundError, gone.stats, "stats", {"id": gone.id})


def test_disk_mb(server: CapsuleServer, client: CapsuleClient) -> None:
    with client.create(disk_mb=32) as capsule:
        assert capsule.stats().disk_limit_bytes == 32 * MIB
        r = capsule.exec("head -c 64000000 /dev/zero > /workspace/big")
        assert r.exit_code != 0 and "Disk quota exceeded" in r.stderr, r
    err = raises_server_error(server, InvalidParamsError, lambda: client.create(disk_mb=1), "create", {"disk_mb": 1})
    assert "disk_mb" in err.message


def test_runtime(server: CapsuleServer, client: CapsuleClient) -> None:
    with client.create(runtime="native") as capsule:
        assert capsule.info().runtime == "native"
        assert capsule.exec("echo native").stdout == "native\n"
    # get and list report it for default creates too.
    with client.create() as capsule:
        assert {s.id: s for s in client.list()}[capsule.id].runtime == "native"
    err = raises_server_error(
        server, UnsupportedError, lambda: client.create(runtime="no-such-runtime"), "create", {"runtime": "no-such-runtime"}
    )
    assert "no-such-runtime" in err.message


# -- pools ---------------------------------------------------------------------


def test_pools_without_any(client: CapsuleClient) -> None:
    assert client.pools() == []


def test_pools() -> None:
    with CapsuleServer(args=["--pool", "base=1", *STORAGE_ARGS]) as server, CapsuleClient(server.url) as client:
        deadline = time.monotonic() + 60
        pools = client.pools()
        while pools[0].ready < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            pools = client.pools()
        assert pools == [PoolInfo(template="base", size=1, ready=1)]
        # A default-shape create takes the ready sandbox.
        with client.create(env={"X": "claimed"}) as capsule:
            assert capsule.exec("echo $X").stdout == "claimed\n"
            (pool,) = client.pools()
            assert (pool.template, pool.size) == ("base", 1)
