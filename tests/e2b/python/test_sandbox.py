"""Sandbox lifecycle through the unmodified E2B Python SDK."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException, SandboxException


def test_create_default_template_runs_commands(server):
    sbx = Sandbox.create()
    try:
        assert sbx.sandbox_id
        info = sbx.get_info()
        assert info.template_id == "base"
        assert info.sandbox_id == sbx.sandbox_id
        assert sbx.is_running()
        assert sbx.commands.run("echo hi").stdout == "hi\n"
    finally:
        sbx.kill()


def test_named_template_with_envs_and_metadata(server):
    sbx = Sandbox.create("python", envs={"GREETING": "hello from envs"}, metadata={"owner": "e2b-test"}, timeout=120)
    try:
        assert sbx.get_info().template_id == "python"
        assert sbx.get_info().metadata == {"owner": "e2b-test"}
        out = sbx.commands.run("echo $GREETING; python3 -c 'print(6*7)'")
        assert out.stdout == "hello from envs\n42\n"
    finally:
        sbx.kill()


def test_unknown_template_is_a_clear_error(server):
    with pytest.raises(SandboxException) as err:
        Sandbox.create("no-such-template")
    assert "no-such-template" in str(err.value)


def test_timeout_sets_end_time_and_set_timeout_moves_it(server):
    sbx = Sandbox.create(timeout=60)
    try:
        info = sbx.get_info()
        life = (info.end_at - info.started_at).total_seconds()
        assert 59 <= life <= 61, life
        sbx.set_timeout(600)
        info2 = sbx.get_info()
        remaining = (info2.end_at - datetime.now(timezone.utc)).total_seconds()
        assert 590 <= remaining <= 601, remaining
    finally:
        sbx.kill()


def test_sandbox_dies_at_its_end_time_and_not_before(server):
    sbx = Sandbox.create(timeout=4)
    end = sbx.get_info().end_at
    # Alive well before the end...
    while (end - datetime.now(timezone.utc)).total_seconds() > 2:
        time.sleep(0.2)
    assert sbx.is_running()
    assert sbx.commands.run("echo still here").stdout == "still here\n"
    # ...and gone after it.
    while datetime.now(timezone.utc) < end + timedelta(seconds=3):
        time.sleep(0.2)
    assert not sbx.is_running()
    with pytest.raises(Exception):
        sbx.commands.run("echo too late", timeout=10)
    ids = [s.sandbox_id for s in Sandbox.list().next_items()]
    assert sbx.sandbox_id not in ids


def test_metrics_come_from_the_sandbox(server, sandbox):
    sandbox.commands.run("head -c 20000000 /dev/zero > /tmp/fill")  # 20 MB in its memory-backed /tmp
    metrics = sandbox.get_metrics()
    assert metrics, "no metrics"
    last = metrics[-1]
    assert last.cpu_count >= 1
    assert last.mem_total > 0
    assert 20_000_000 <= last.mem_used <= last.mem_total


def test_connect_by_id_reaches_the_same_sandbox(server, sandbox):
    sandbox.files.write("/home/user/marker.txt", "same box")
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again.sandbox_id == sandbox.sandbox_id
    assert again.files.read("/home/user/marker.txt") == "same box"
    assert again.commands.run("cat /home/user/marker.txt").stdout == "same box"


def test_connect_to_unknown_sandbox_fails(server):
    with pytest.raises((NotFoundException, SandboxException)):
        Sandbox.connect("doesnotexist1")


def test_list_filters_by_metadata_and_state_and_pages(server):
    tag = f"list-{time.time_ns()}"
    boxes = [Sandbox.create(metadata={"suite": tag, "n": str(i)}, timeout=120) for i in range(3)]
    other = Sandbox.create(metadata={"suite": "someone-else"}, timeout=120)
    try:
        found = Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items()
        assert sorted(s.sandbox_id for s in found) == sorted(b.sandbox_id for b in boxes)
        assert all(s.metadata["suite"] == tag for s in found)
        assert all(s.state == SandboxState.RUNNING for s in found)
        assert {s.template_id for s in found} == {"base"}

        one = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "n": "1"})).next_items()
        assert [s.sandbox_id for s in one] == [boxes[1].sandbox_id]

        paused = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.PAUSED])).next_items()
        assert paused == []

        pager = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), limit=2)
        first = pager.next_items()
        assert len(first) == 2 and pager.has_next
        second = pager.next_items()
        assert len(second) == 1 and not pager.has_next
        assert sorted(s.sandbox_id for s in first + second) == sorted(b.sandbox_id for b in boxes)

        by_template = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, template="python")).next_items()
        assert by_template == []
        later = Sandbox.list(
            query=SandboxQuery(metadata={"suite": tag}, started_after=datetime.now(timezone.utc) + timedelta(hours=1))
        ).next_items()
        assert later == []
    finally:
        for b in boxes + [other]:
            b.kill()
    assert Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items() == []


def test_kill_ends_the_sandbox(server):
    sbx = Sandbox.create()
    sandbox_id = sbx.sandbox_id
    assert sbx.kill() is True
    assert not sbx.is_running()
    assert Sandbox.kill(sandbox_id) is False  # already gone
    with pytest.raises(Exception) as err:
        sbx.commands.run("echo gone", timeout=10)
    assert sandbox_id in str(err.value) or "not found" in str(err.value).lower()


def test_both_route_generations_and_unknown_fields(server):
    headers = {"X-API-Key": server.api_key}
    body = {"templateID": "base", "timeout": 60, "metadata": {"route": "raw"}, "someFutureField": {"x": [1, 2]}}

    def chunks():
        raw = json.dumps(body).encode()
        for i in range(0, len(raw), 7):
            yield raw[i:i + 7]

    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        # A chunked request body (no Content-Length), HTTP/1.1.
        created = http.post("/sandboxes", content=chunks(), headers={"Content-Type": "application/json"})
        assert created.status_code == 201, created.text
        sid = created.json()["sandboxID"]
        try:
            v1 = http.get("/sandboxes", params={"metadata": "route=raw"})
            v2 = http.get("/v2/sandboxes", params={"metadata": "route=raw", "state": "running"})
            assert v1.status_code == 200 and v2.status_code == 200
            assert [s["sandboxID"] for s in v1.json()] == [sid]
            assert [s["sandboxID"] for s in v2.json()] == [sid]
            detail = http.get(f"/sandboxes/{sid}")
            assert detail.status_code == 200 and detail.json()["state"] == "running"
            bad = http.get("/v2/sandboxes", params={"state": "sleeping"})
            assert bad.status_code == 400 and "sleeping" in bad.json()["message"]
        finally:
            assert http.delete(f"/sandboxes/{sid}").status_code == 204
        assert http.get(f"/sandboxes/{sid}").status_code == 404


def test_pause_resume_snapshot_and_fork(server, sandbox):
    sandbox.files.write("/home/user/state.txt", "before pause")
    assert sandbox.pause() is True
    assert sandbox.get_info().state == SandboxState.PAUSED
    assert sandbox.pause() is False  # already paused
    listed = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
    assert sandbox.sandbox_id in [s.sandbox_id for s in listed]
    # Connecting resumes it, with its files and processes as they were.
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again.get_info().state == SandboxState.RUNNING
    assert again.files.read("/home/user/state.txt") == "before pause"

    snap = again.create_snapshot(name=f"e2b-{time.time_ns()}")
    assert snap.snapshot_id
    copy = Sandbox.create(snap.snapshot_id, timeout=60)
    try:
        assert copy.files.read("/home/user/state.txt") == "before pause"
        copy.files.write("/home/user/state.txt", "changed in the copy")
        assert again.files.read("/home/user/state.txt") == "before pause"
    finally:
        copy.kill()
    forks = again.fork(count=2)
    try:
        assert len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks), forks
        for f in forks:
            assert f.files.read("/home/user/state.txt") == "before pause"
    finally:
        for f in forks:
            if isinstance(f, Sandbox):
                f.kill()


def test_lifecycle_pause_on_timeout(server):
    sbx = Sandbox.create(timeout=3, lifecycle={"on_timeout": "pause"})
    try:
        sbx.files.write("/home/user/kept.txt", "kept")
        end = sbx.get_info().end_at
        while datetime.now(timezone.utc) < end + timedelta(seconds=2):
            time.sleep(0.2)
        assert sbx.get_info().state == SandboxState.PAUSED
        again = Sandbox.connect(sbx.sandbox_id, timeout=60)
        assert again.files.read("/home/user/kept.txt") == "kept"
        assert again.get_info().state == SandboxState.RUNNING
    finally:
        sbx.kill()


def test_unsupported_options_fail_clearly_and_fast(server):
    started = time.monotonic()
    with pytest.raises(SandboxException) as err:
        Sandbox.create(allow_internet_access=True)
    assert time.monotonic() - started < 10
    assert "internet" in str(err.value).lower()
