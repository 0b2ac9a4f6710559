"""Red-team cases of the HTTP service (issue 27): upload limits checked before parsing (a zip's
entry count and central directory from its end record, the bytes compressed scans decode to), a
read timeout for stalled uploads, a cap on uploads at once, and zip entries that clash or have
over-long names: each a 4xx naming the limit, never a 500. One real server on loopback."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import zipfile

import httpx
import numpy as np
import pytest

from raddiag.serving.sample import (clashing_zip, make_tiny_run, many_entries_zip, sample_png, volume_bomb,
                                    wait_until_healthy)
from raddiag.serving.uploads import Budget, UploadError, check_zip_directory

MAX_FILES, MAX_MB, MAX_DECODED_MB, READ_TIMEOUT, MAX_UPLOADS = 5, 2, 64, 1.0, 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve27")
    make_tiny_run(d / "run")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "raddiag", "serve", str(d / "run"), "--port", str(port),
                             "--max-files", str(MAX_FILES), "--max-mb", str(MAX_MB),
                             "--max-decoded-mb", str(MAX_DECODED_MB), "--read-timeout", str(READ_TIMEOUT),
                             "--max-uploads", str(MAX_UPLOADS)],
                            env={**os.environ, "OMP_NUM_THREADS": "2"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not wait_until_healthy(url, proc, timeout=120):
        proc.kill()
        pytest.fail(f"server did not start: {proc.stdout.read().decode()[-2000:]}")
    yield {"url": url, "port": port}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _post(server, name, data, path="/predict", modality="X-ray"):
    return httpx.post(server["url"] + path, files=[("files", (name, data))], data={"modality": modality}, timeout=60)


@pytest.mark.parametrize("path", ["/predict", "/embed"])
@pytest.mark.parametrize("zip_bytes, reason", [(clashing_zip(True), "clashes"), (clashing_zip(False), "clashes")],
                         ids=["file-then-folder", "folder-then-file"])
def test_clashing_zip_entries_are_a_400(server, path, zip_bytes, reason):
    """Issue 27.9: HTTP 500 on both endpoints."""
    r = _post(server, "c.zip", zip_bytes, path)
    assert r.status_code == 400 and reason in r.json()["detail"], r.text


@pytest.mark.parametrize("path", ["/predict", "/embed"])
def test_an_over_long_zip_folder_name_is_cut_as_file_names_are(server, path):
    """Issue 27.9 made a 300-character folder name a 400 (it was a 500); it is now cut to 150 bytes,
    as an upload's file name is (uploads.NAME_BYTES)."""
    r = _post(server, "c.zip", clashing_zip(long_folder=300), path)
    assert r.status_code == 200, r.text
    if path == "/predict":
        import hashlib

        assert r.json()["scans"][0]["paths"] == ["x" * 141 + "~" + hashlib.sha1(b"x" * 300).hexdigest()[:8] + "/c.png"]


def test_a_zip_of_many_entries_is_refused_from_its_end_record(server):
    r = _post(server, "many.zip", many_entries_zip(2000))
    assert r.status_code == 413 and "declares 2,000 entries; at most 36" in r.json()["detail"], r.text


def test_a_zip_with_a_huge_central_directory_is_refused(server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:             # 10 entries, 60 KB of names
        for i in range(10):
            z.writestr(f"{i}" + "n" * 6000 + ".png", b"")
    r = _post(server, "names.zip", buf.getvalue())
    assert r.status_code == 413 and "central directory" in r.json()["detail"], r.text


def test_a_compressed_volume_bomb_is_refused_from_its_header(server):
    """Issue 27.2: a .nii.gz of 256^3 float64 zeros (134 MB decoded, 140 KB sent) was decompressed
    (the 9.5 MB one of 1024 x 1024 x 1000: 18 s of CPU, then 200)."""
    bomb = volume_bomb((256, 256, 256))
    assert len(bomb) < 1 << 20
    t = time.time()
    r = _post(server, "v.nii.gz", bomb, modality="CT")
    assert r.status_code == 413 and "--max-decoded-mb" in r.json()["detail"], r.text
    assert time.time() - t < 30


def test_pngs_that_decode_over_the_budget_are_refused(server):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4500, 4500)).save(buf, format="PNG")        # 20 MB of pixels each, 20 KB of file
    files = [("files", (f"{i}.png", buf.getvalue())) for i in range(4)]
    r = httpx.post(server["url"] + "/predict", files=files, data={"modality": "X-ray"}, timeout=60)
    assert r.status_code == 413 and "decodes to more than" in r.json()["detail"], r.text


def _stalled(server, sent: bytes = b"--x\r\n") -> socket.socket:
    """A connection that sends its headers and the first bytes of a 100 KB body, then nothing."""
    s = socket.create_connection(("127.0.0.1", server["port"]))
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
              b"Content-Length: 100000\r\n\r\n" + sent)
    return s


def _answer(s: socket.socket, timeout: float = 20) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


def test_a_stalled_upload_is_answered_408_and_uploads_at_once_are_capped(server):
    t = time.time()
    assert _answer(_stalled(server)).startswith(b"HTTP/1.1 408")
    assert time.time() - t < 10
    held = [_stalled(server) for _ in range(MAX_UPLOADS)]
    time.sleep(0.3)
    r = _post(server, "a.png", sample_png(16))
    assert r.status_code == 429 and "--max-uploads" in r.json()["detail"]
    assert all(_answer(s).startswith(b"HTTP/1.1 408") for s in held)
    assert _post(server, "a.png", sample_png(16)).status_code == 200
    health = httpx.get(server["url"] + "/health").json()
    assert (health["max_uploads"], health["read_timeout"], health["max_decoded"]) == \
        (MAX_UPLOADS, READ_TIMEOUT, MAX_DECODED_MB << 20)


def _with_end_record(data: bytes, entries: int, size: int) -> bytes:
    end = data.rindex(b"PK\x05\x06")
    rec = bytearray(data[end:])
    rec[8:10] = rec[10:12] = min(entries, 0xFFFE).to_bytes(2, "little")
    rec[12:16] = size.to_bytes(4, "little")
    return data[:end] + bytes(rec)


@pytest.mark.parametrize("entries, size, reason", [(60_000, 100, "declares 60,000 entries"),
                                                   (3, 5_000_000, "central directory is 5,000,000 bytes")])
def test_the_end_record_is_checked_before_the_directory_is_parsed(tmp_path, monkeypatch, entries, size, reason):
    path = tmp_path / "c.zip"
    path.write_bytes(_with_end_record(clashing_zip(), entries, size))
    parsed = []
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda self: parsed.append(1))
    with pytest.raises(UploadError, match=reason) as e:
        check_zip_directory(path, Budget(64, 1 << 30), "c.zip")
    assert e.value.status == 413 and not parsed


def test_a_decoded_budget_counts_every_file_of_a_request():
    b = Budget(10, 1 << 30, max_decoded=100)
    b.add_decoded(60, "a")
    with pytest.raises(UploadError, match="'b'.*limit of 100 bytes"):
        b.add_decoded(60, "b")


@pytest.mark.parametrize("extra", [0, 8170])
def test_the_decoded_size_is_read_from_the_header(tmp_path, extra):
    """Also when a gzip extra field pushes the header past the first 8 KB that sniff reads."""
    import gzip
    import struct
    import zlib

    from raddiag.serving.uploads import decoded_bytes

    raw = gzip.decompress(volume_bomb((64, 64, 40), np.int16))
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    blob = (b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\xff" + struct.pack("<H", extra) + b"X" * extra
            + co.compress(raw) + co.flush() + struct.pack("<II", zlib.crc32(raw), len(raw)))
    (tmp_path / "v.nii.gz").write_bytes(blob)
    assert decoded_bytes(tmp_path / "v.nii.gz", "nifti.gz") == 64 * 64 * 40 * 2


def _zip_of(entries: dict) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    return io.BytesIO(buf.getvalue())


@pytest.mark.parametrize("uploads", [
    [("a.png", "file"), ("s.zip", {"a.png": "zip"})],
    [("s.zip", {"a.png": "zip"}), ("a.png", "file")],
    [("s1.zip", {"series/IM1.png": "one"}), ("s2.zip", {"series/IM1.png": "two"})],
], ids=["file-then-zip", "zip-then-file", "two-zips"])
def test_uploads_of_the_same_name_are_all_kept(tmp_path, uploads):
    """Red team: a file beside a zip holding a file of the same name, or two zips of the same series
    folder, were stored under one name: the later overwrote the earlier, and the case was predicted
    from fewer scans than uploaded, without a word."""
    from raddiag.serving.uploads import save_upload

    pngs = {tag: sample_png(32, seed=i) for i, tag in enumerate(("file", "zip", "one", "two"))}
    dest, budget, taken, stored = tmp_path / "case", Budget(10, 1 << 24), set(), []
    dest.mkdir()
    for name, what in uploads:
        data = io.BytesIO(pngs[what]) if isinstance(what, str) else _zip_of({n: pngs[t] for n, t in what.items()})
        stored += save_upload(data, name, dest, budget, taken)
    assert len(set(stored)) == 2 and sorted(p.read_bytes() for p in stored) == sorted(
        pngs[t] for _, what in uploads for t in ([what] if isinstance(what, str) else what.values()))


def test_an_animated_png_counts_every_frame_it_decodes(tmp_path):
    """Red team: an animated PNG's frames are slices the reader decodes, but only the first was
    counted: 300 frames of 1024 x 1024 (0.9 MB sent) passed the budget as 1 MB."""
    from PIL import Image

    from raddiag.serving.uploads import decoded_bytes, save_upload

    frames = [Image.fromarray(np.full((256, 256), i, np.uint8)) for i in range(20)]
    frames[0].save(tmp_path / "clip.png", save_all=True, append_images=frames[1:])
    assert decoded_bytes(tmp_path / "clip.png", "png") == 20 * 256 * 256
    dest = tmp_path / "case"
    dest.mkdir()
    with pytest.raises(UploadError, match="decodes to more than the limit") as e:
        save_upload(open(tmp_path / "clip.png", "rb"), "clip.png", dest, Budget(10, 1 << 24, 10 * 256 * 256), set())
    assert e.value.status == 413
