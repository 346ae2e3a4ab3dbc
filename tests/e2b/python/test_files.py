"""Files through the unmodified E2B Python SDK."""

from __future__ import annotations

import hashlib
import io
import time

import httpx
import pytest
from e2b import FileType, FilesystemEventType, NotFoundException


def test_write_and_read_text_bytes_and_stream(sandbox):
    info = sandbox.files.write("/home/user/hello.txt", "héllo\nwörld\n")
    assert info.path == "/home/user/hello.txt"
    assert sandbox.files.read("/home/user/hello.txt") == "héllo\nwörld\n"
    raw = bytes(range(256)) * 4
    sandbox.files.write("/home/user/raw.bin", raw)
    assert bytes(sandbox.files.read("/home/user/raw.bin", format="bytes")) == raw
    streamed = b"".join(sandbox.files.read("/home/user/raw.bin", format="stream"))
    assert streamed == raw
    # What the SDK wrote is what programs in the sandbox see.
    assert sandbox.commands.run("sha256sum /home/user/raw.bin").stdout.split()[0] == hashlib.sha256(raw).hexdigest()


def test_write_many_files_at_once(sandbox):
    infos = sandbox.files.write_files([
        {"path": "/home/user/many/a.txt", "data": "A"},
        {"path": "/home/user/many/sub/b.bin", "data": b"\x00\xffB"},
        {"path": "/home/user/many/c.txt", "data": io.BytesIO(b"from a file object")},
    ])
    assert sorted(i.path for i in infos) == ["/home/user/many/a.txt", "/home/user/many/c.txt", "/home/user/many/sub/b.bin"]
    assert sandbox.files.read("/home/user/many/a.txt") == "A"
    assert bytes(sandbox.files.read("/home/user/many/sub/b.bin", format="bytes")) == b"\x00\xffB"
    assert sandbox.files.read("/home/user/many/c.txt") == "from a file object"


def test_list_with_depth_exists_and_info(sandbox):
    sandbox.files.write("/home/user/tree/top.txt", "t")
    sandbox.files.write("/home/user/tree/d1/mid.txt", "mm")
    sandbox.files.write("/home/user/tree/d1/d2/deep.txt", "ddd")
    shallow = {e.path for e in sandbox.files.list("/home/user/tree")}
    assert shallow == {"/home/user/tree/top.txt", "/home/user/tree/d1"}
    deep = {e.path: e for e in sandbox.files.list("/home/user/tree", depth=3)}
    assert set(deep) == {
        "/home/user/tree/top.txt", "/home/user/tree/d1", "/home/user/tree/d1/mid.txt",
        "/home/user/tree/d1/d2", "/home/user/tree/d1/d2/deep.txt",
    }
    assert deep["/home/user/tree/d1"].type == FileType.DIR
    assert deep["/home/user/tree/d1/d2/deep.txt"].type == FileType.FILE
    assert deep["/home/user/tree/d1/d2/deep.txt"].size == 3

    assert sandbox.files.exists("/home/user/tree/top.txt")
    assert not sandbox.files.exists("/home/user/tree/nope.txt")
    info = sandbox.files.get_info("/home/user/tree/d1/mid.txt")
    assert (info.name, info.type, info.size, info.owner) == ("mid.txt", FileType.FILE, 2, "user")
    with pytest.raises(NotFoundException):
        sandbox.files.get_info("/home/user/tree/missing")
    with pytest.raises(NotFoundException):
        sandbox.files.read("/home/user/tree/missing")


def test_make_dir_rename_remove(sandbox):
    assert sandbox.files.make_dir("/home/user/newdir/inner") is True
    assert sandbox.files.make_dir("/home/user/newdir/inner") is False  # already there
    sandbox.files.write("/home/user/newdir/inner/f.txt", "content")
    moved = sandbox.files.rename("/home/user/newdir/inner/f.txt", "/home/user/newdir/g.txt")
    assert moved.path == "/home/user/newdir/g.txt"
    assert not sandbox.files.exists("/home/user/newdir/inner/f.txt")
    assert sandbox.files.read("/home/user/newdir/g.txt") == "content"
    sandbox.files.remove("/home/user/newdir")
    assert not sandbox.files.exists("/home/user/newdir")


def test_files_respect_the_user(sandbox):
    with pytest.raises(Exception) as err:
        sandbox.files.write("/etc/not-yours.txt", "x")
    assert "permission" in str(err.value).lower()
    sandbox.files.write("/etc/root-owned.txt", "x", user="root")
    assert sandbox.files.get_info("/etc/root-owned.txt", user="root").owner == "root"


def test_watch_dir_reports_create_write_remove_rename(sandbox):
    sandbox.files.make_dir("/home/user/watched")
    handle = sandbox.files.watch_dir("/home/user/watched")
    try:
        sandbox.files.write("/home/user/watched/a.txt", "1")
        sandbox.commands.run("echo more >> /home/user/watched/a.txt")
        sandbox.files.rename("/home/user/watched/a.txt", "/home/user/watched/b.txt")
        sandbox.files.remove("/home/user/watched/b.txt")
        wanted = {
            ("a.txt", FilesystemEventType.CREATE),
            ("a.txt", FilesystemEventType.WRITE),
            ("a.txt", FilesystemEventType.RENAME),
            ("b.txt", FilesystemEventType.CREATE),
            ("b.txt", FilesystemEventType.REMOVE),
        }
        seen: set = set()
        deadline = time.monotonic() + 10
        while not wanted <= seen and time.monotonic() < deadline:
            seen |= {(e.name, e.type) for e in handle.get_new_events()}
            time.sleep(0.1)
        assert wanted <= seen, seen
    finally:
        handle.stop()


def test_signed_upload_and_download_urls(sandbox):
    up = sandbox.upload_url("/home/user/signed.txt")
    assert "signature=" in up
    with httpx.Client(timeout=30) as http:
        r = http.post(up, files={"file": ("signed.txt", b"uploaded by url")})
        assert r.status_code == 200, r.text
        assert sandbox.files.read("/home/user/signed.txt") == "uploaded by url"
        down = sandbox.download_url("/home/user/signed.txt")
        got = http.get(down)
        assert got.status_code == 200 and got.content == b"uploaded by url"
        # A signature is bound to its path and operation.
        forged = down.replace("signed.txt", "other.txt")
        assert http.get(forged).status_code == 401
        assert http.post(down, files={"file": ("x", b"x")}).status_code == 401
        # Expiring URLs work until they expire.
        short = sandbox.download_url("/home/user/signed.txt", use_signature_expiration=60)
        assert http.get(short).content == b"uploaded by url"
        expired = sandbox.download_url("/home/user/signed.txt", use_signature_expiration=-10)
        assert http.get(expired).status_code == 401


class _Zeros(io.RawIOBase):
    """A large file that exists only as it is read."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self.left)
        chunk = bytes((i * 7 + self.left) & 0xFF for i in range(min(n, 256))) * (n // 256 + 1)
        chunk = chunk[:n]
        b[:n] = chunk
        self.digest.update(chunk)
        self.left -= n
        return n


def test_large_file_is_streamed_both_ways(server, sandbox):
    size = 120 * 1024 * 1024
    before = server.rss_peak_kib()
    source = _Zeros(size)
    sandbox.files.write("/home/user/big.bin", io.BufferedReader(source, buffer_size=1 << 20), request_timeout=300)
    assert sandbox.files.get_info("/home/user/big.bin").size == size
    in_box = sandbox.commands.run("sha256sum /home/user/big.bin", timeout=120).stdout.split()[0]
    assert in_box == source.digest.hexdigest()
    back = hashlib.sha256()
    total = 0
    for chunk in sandbox.files.read("/home/user/big.bin", format="stream", request_timeout=300):
        back.update(chunk)
        total += len(chunk)
    assert total == size and back.hexdigest() == source.digest.hexdigest()
    # The server streamed it: its peak memory grew by far less than the file.
    grown_mib = (server.rss_peak_kib() - before) / 1024
    assert grown_mib < 48, f"the server's peak RSS grew by {grown_mib:.0f} MiB for a 120 MiB file"
    sandbox.files.remove("/home/user/big.bin")
