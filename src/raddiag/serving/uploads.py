"""Upload safety for the HTTP service: file types by content, size and count limits, safe zip
extraction. Every rejection is an :class:`UploadError` carrying an HTTP status (4xx) and a
message that names the file and the reason.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import io
import lzma
import math
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Optional

CHUNK = 1 << 20


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return int.from_bytes(head[:4], "little") == 348 or int.from_bytes(head[:4], "big") == 348
    if len(head) >= 12 and head[4:8] == b"n+2\x00":
        return int.from_bytes(head[:4], "little") == 540 or int.from_bytes(head[:4], "big") == 540
    return False


def sniff(head: bytes) -> Optional[str]:
    """The file kind from its first bytes (>= 352 of them, or the whole file):
    ``png``, ``jpeg``, ``dicom``, ``nifti``, ``nifti.gz``, ``npy``, ``zip``; None if unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(b"\x1f\x8b"):
        try:
            inner = gzip.GzipFile(fileobj=io.BytesIO(head)).read(352)
        except (OSError, EOFError, zlib.error):
            # a truncated stream is expected here (we only hold the first bytes)
            inner = _gunzip_prefix(head)
        if _is_nifti_header(inner):
            return "nifti.gz"
    return None


def _gunzip_prefix(data: bytes) -> bytes:
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 352)
    except zlib.error:
        return b""


SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm", "nifti": ".nii", "nifti.gz": ".nii.gz", "npy": ".npy"}
HEAD_BYTES = 8192
NAME_BYTES = 150       # a stored name's stem, in UTF-8 bytes (a file name may have 255)


def _clean(text: str, limit: Optional[int] = None) -> str:
    """``text`` as one safe path component that keeps the user's spelling (Unicode, spaces): path
    separators, control and format characters and line breaks become '_', leading and trailing
    dots and spaces go ('..', hidden files), at most ``limit`` bytes. The names were cut to ASCII,
    and a scan uploaded as 'pneumothorax ñ 肺.png' was reported as 'pneumothorax.png'."""
    text = "".join("_" if c in "/\\" or (c.isspace() and c != " ") or unicodedata.category(c)[0] == "C"
                   else c for c in unicodedata.normalize("NFC", text))    # one spelling of 'é', as labels have
    if limit is not None and len(text.encode()) > limit:   # cut, tagged with the whole name's hash: two
        tag = "~" + hashlib.sha1(text.encode()).hexdigest()[:8]   # names alike in their first bytes stay two
        text = text.encode()[:limit - len(tag)].decode("utf-8", "ignore") + tag
    return text.strip(". ")


def upload_stem(name: str) -> str:
    """An upload's base name (no folders) without its scan or zip extension, cleaned (:func:`_clean`)."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    low = base.lower()
    for suf in (".nii.gz", ".nii", ".npy", ".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".gz", ".zip"):
        if low.endswith(suf):
            base = base[: -len(suf)]
            break
    return _clean(base, NAME_BYTES)


def safe_name(name: str, kind: str, taken: set[str]) -> str:
    """A plain file name for an upload: its cleaned base name (:func:`upload_stem`), the extension
    set from the sniffed content, made unique within ``taken``."""
    stem = upload_stem(name) or "file"
    out = stem + SUFFIX[kind]
    i = 1
    while out in taken:
        out = f"{stem}_{i}{SUFFIX[kind]}"
        i += 1
    taken.add(out)
    return out


class Budget:
    """Counts files, bytes and decoded bytes of one upload against the limits. ``max_decoded``:
    the bytes the request's compressed scans decode to (a .nii.gz, PNG / JPEG pixels, compressed
    DICOM frames), read from their headers before any pixel is decoded: a 9.5 MB .nii.gz of
    1024 x 1024 x 1000 float64 declares 8 GB, and decompressing it took 18 s of CPU."""

    def __init__(self, max_files: int, max_bytes: int, max_decoded: int = 2 << 30) -> None:
        self.max_files, self.max_bytes, self.max_decoded = max_files, max_bytes, max_decoded
        self.files = 0
        self.bytes = 0
        self.decoded = 0
        self.names: dict[Path, set[str]] = {}     # folder -> names stored there, over the whole request

    @property
    def max_entries(self) -> int:
        """Entries a zip may declare: its files, their folders, a metadata twin each (__MACOSX)."""
        return 4 * self.max_files + 16

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise UploadError(413, f"too many files: more than {self.max_files} in one upload ({name!r} and on)")

    def add_bytes(self, n: int, name: str) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise UploadError(413, f"upload too large: more than {self.max_bytes} bytes "
                                   f"(limit reached in {name!r})")

    def add_decoded(self, n: int, name: str) -> None:
        self.decoded += n
        if self.decoded > self.max_decoded:
            raise UploadError(413, f"{name!r}: its header declares {n:,} bytes decoded; with the files before it "
                                   f"the upload decodes to more than the limit of {self.max_decoded:,} bytes a request "
                                   "(raddiag serve --max-decoded-mb)")


def _copy(src: BinaryIO, dst: Path, budget: Budget, name: str, head: bytes = b"") -> None:
    with open(dst, "wb") as f:
        if head:
            budget.add_bytes(len(head), name)
            f.write(head)
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            budget.add_bytes(len(chunk), name)
            f.write(chunk)


def save_upload(fileobj: BinaryIO, name: str, dest: Path, budget: Budget, taken: set[str],
                allow_zip: bool = True, label: Optional[str] = None) -> list[Path]:
    """Check one uploaded file by content and store it under ``dest`` (``label`` names it in
    messages). A zip is extracted safely. Returns the stored paths."""
    stored_name, name = name, label or name
    head = fileobj.read(HEAD_BYTES)
    if not head:
        raise UploadError(400, f"{name!r} is empty")
    kind = sniff(head)
    if kind is None:
        raise UploadError(415, f"{name!r}: unsupported file type (by content); expected DICOM (with the "
                               "'DICM' preamble), NIfTI (.nii / .nii.gz), NPY, PNG, JPEG, or a ZIP of those")
    if kind == "zip":
        if not allow_zip:
            raise UploadError(415, f"{name!r}: a zip inside a zip is not accepted")
        budget.add_file(name)
        tmp = dest.parent / f".{dest.name}.upload{len(taken)}.zip"
        taken.add(tmp.name)
        _copy(fileobj, tmp, budget, name, head)
        budget.bytes -= tmp.stat().st_size          # counted again, uncompressed, while extracting
        budget.files -= 1
        try:
            return extract_zip(tmp, dest, budget, name, taken)
        finally:
            tmp.unlink(missing_ok=True)
    budget.add_file(name)
    out = dest / safe_name(stored_name, kind, taken)
    _copy(fileobj, out, budget, name, head)
    decoded = decoded_bytes(out, kind)
    if decoded:
        budget.add_decoded(decoded, name)
    return [out]


def decoded_bytes(path: Path, kind: str) -> Optional[int]:
    """The bytes a compressed scan decodes to, from its header (None: the pixels are stored as they
    are, bounded by the file's size, or the header is unreadable, which the readers report). An
    animated PNG counts all its frames: 300 frames of 1024 x 1024 in a 0.9 MB file were counted as
    one frame (1 MB), and 64 of them in a request decoded 20 GB."""
    try:
        if kind == "nifti.gz":      # the header as the reader reads it (raddiag.data.readers._nifti_volume)
            import nibabel as nib

            with gzip.open(path, "rb") as f:
                inner = f.read(540)
            n2 = 540 in struct.unpack("<i", inner[:4]) + struct.unpack(">i", inner[:4])
            hdr = (nib.Nifti2Header if n2 else nib.Nifti1Header).from_fileobj(io.BytesIO(inner))
            return math.prod(int(d) for d in hdr.get_data_shape()) * hdr.get_data_dtype().itemsize
        if kind in ("png", "jpeg"):
            from PIL import Image

            with Image.open(path) as im:     # every frame of an animated PNG is a slice the reader decodes
                bits = 16 if im.mode.startswith("I;16") or im.mode in ("I", "F") else 8
                frames = int(getattr(im, "n_frames", 1) or 1)
                return frames * im.width * im.height * len(im.getbands()) * bits // 8
        if kind == "dicom":
            from raddiag.data.dicom import read_dicom_header

            ds = read_dicom_header(path)
            ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            if ts is None or not (ts.is_encapsulated or ts.is_deflated):
                return None
            return (int(getattr(ds, "NumberOfFrames", 1) or 1) * int(ds.Rows) * int(ds.Columns)
                    * int(getattr(ds, "SamplesPerPixel", 1) or 1) * -(-int(ds.BitsAllocated) // 8))
    except Exception:   # noqa: BLE001 - an unreadable header: the scan readers name the reason (422)
        return None
    return None


def _entry_problem(info: zipfile.ZipInfo) -> Optional[str]:
    n = info.filename
    if n.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", n):
        return "has an absolute path"
    parts = n.replace("\\", "/").split("/")
    if ".." in parts:
        return "leaves the archive folder ('..')"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if "\x00" in n:
        return "has a NUL byte in its name"
    return None


# what reading a damaged zip entry raises: bad CRC / header (BadZipFile), a corrupt deflate, bzip2
# or lzma stream (zlib.error, OSError, LZMAError), a cut-off stream (EOFError), an encrypted entry
# (RuntimeError), an unknown compression method (NotImplementedError), odd header fields (ValueError)
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError,
                   NotImplementedError, ValueError, struct.error)
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
               zipfile.ZIP_LZMA: "lzma"}


class _EntryReader:
    """A zip entry's stream whose decoding errors become a 400 naming the entry (errors writing
    the extracted file are not caught here: a full disk is the server's problem, not the upload's)."""

    def __init__(self, src: BinaryIO, label: str) -> None:
        self.src, self.label = src, label

    def read(self, n: int = -1) -> bytes:
        try:
            return self.src.read(n)
        except ZIP_READ_ERRORS as exc:
            raise UploadError(400, f"{self.label!r}: zip entry is corrupt ({type(exc).__name__}: {exc})") from None


def _entry_format_problem(info: zipfile.ZipInfo) -> Optional[str]:
    if info.flag_bits & 0x1:
        return "is encrypted; upload it without a password"
    if info.compress_type not in ZIP_METHODS:
        return (f"uses compression method {info.compress_type}, which is not supported "
                f"(use one of: {', '.join(ZIP_METHODS.values())})")
    return None


def extract_zip(path: Path, dest: Path, budget: Budget, name: str, taken: Optional[set[str]] = None) -> list[Path]:
    """Extract a zip under ``dest`` keeping its folder structure (DICOM series folders), after
    checking every entry: no absolute paths, no ``..``, no links, no encryption, a known
    compression method, limits on count and total uncompressed size (counted while reading, so a
    lying header cannot bomb), each file sniffed. A damaged entry (bad CRC, corrupt stream) is a 400.
    ``taken``: the names already stored in ``dest`` by this request; every name an entry gets is
    unique over the request (``budget.names``): a file ``a.png`` beside a zip holding ``a.png``, or
    two zips of ``series/IM1.dcm``, overwrote the earlier scan, and the case lost it without a word."""
    check_zip_directory(path, budget, name)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, *ZIP_READ_ERRORS) as exc:
        raise UploadError(400, f"{name!r}: not a valid zip file ({type(exc).__name__}: {exc})") from None
    out: list[Path] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > budget.max_entries:     # more entries than the end record declared
            raise UploadError(413, f"{name!r}: {len(infos):,} zip entries; at most {budget.max_entries:,} "
                                   f"(4 x --max-files {budget.max_files} + 16)")
        for info in infos:
            problem = _entry_problem(info) or _entry_format_problem(info)
            if problem:
                raise UploadError(400, f"{name!r}: zip entry {info.filename!r} {problem}; rejected")
        files = [i for i in infos if not i.is_dir()
                 and not i.filename.startswith("__MACOSX/")
                 and not PurePosixPath(i.filename).name.startswith(".")]
        if not files:
            raise UploadError(400, f"{name!r}: the zip holds no files")
        if len(files) > budget.max_files:
            raise UploadError(413, f"{name!r}: {len(files)} files in the zip; at most {budget.max_files}")
        declared = sum(i.file_size for i in files)
        if budget.bytes + declared > budget.max_bytes:
            raise UploadError(413, f"{name!r}: {declared} bytes uncompressed; limit {budget.max_bytes}")
        root = dest.resolve()
        budget.names.setdefault(root, set() if taken is None else taken)
        for info in files:
            out += _extract_entry(zf, info, root, budget, name, budget.names)
    return out


CLASHES = (errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG)


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path, budget: Budget, name: str,
                   taken_in: dict[Path, set[str]]) -> list[Path]:
    """One file entry of a checked zip, stored under ``root`` in its (cleaned) folder. An entry
    whose path clashes with another's (``a.png`` and ``a.png/b.png``) or is too long for the file
    system is a 400 naming it (it was a 500); other OS errors (a full disk) are the server's."""
    rel = PurePosixPath(info.filename.replace("\\", "/"))
    parts = [_clean_part(p) for p in rel.parts[:-1]]      # each at most NAME_BYTES: a file system takes it
    folder = root.joinpath(*parts)
    if root not in (folder.resolve(), *folder.resolve().parents):   # belt and braces
        raise UploadError(400, f"{name!r}: zip entry {info.filename!r} leaves the archive folder")
    label = f"{name}:{info.filename}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            src = zf.open(info)
        except ZIP_READ_ERRORS as exc:
            raise UploadError(400, f"{label!r}: zip entry cannot be opened ({type(exc).__name__}: {exc})") from None
        with src:
            return save_upload(_EntryReader(src, label), rel.name, folder, budget,
                               taken_in.setdefault(folder, set()), allow_zip=False, label=label)
    except OSError as exc:
        if exc.errno not in CLASHES:
            raise
        raise UploadError(400, f"{name!r}: zip entry {info.filename[:300]!r} cannot be stored: its path clashes "
                               f"with another entry's (a file and a folder of the same name) or is too long "
                               f"({errno.errorcode.get(exc.errno, exc.errno)})") from None


# The end-of-central-directory record as zipfile itself reads it (ZIP64 included): zipfile then
# parses ``size`` bytes of central directory into Python objects, all of them before any check of
# ours could run (5 million entries in a 240 MB upload took the service from 0.7 to 2.9 GB).
_END_RECORD, _ENTRIES, _DIRECTORY_SIZE = zipfile._EndRecData, zipfile._ECD_ENTRIES_TOTAL, zipfile._ECD_SIZE
DIRECTORY_BYTES_PER_ENTRY = 1024     # a central directory entry: 46 bytes, its name, extra fields


def check_zip_directory(path: Path, budget: Budget, name: str) -> None:
    """Refuse, from the zip's end record, before its central directory is parsed: more entries
    than ``budget.max_entries``, or a central directory over ``DIRECTORY_BYTES_PER_ENTRY`` bytes
    an entry (413, naming the limit)."""
    with open(path, "rb") as f:
        try:
            end = _END_RECORD(f)
        except (OSError, struct.error):
            end = None
    if not end:
        raise UploadError(400, f"{name!r}: not a valid zip file (no end of central directory record)")
    entries, size = end[_ENTRIES], end[_DIRECTORY_SIZE]
    if entries > budget.max_entries:
        raise UploadError(413, f"{name!r}: the zip declares {entries:,} entries; at most {budget.max_entries:,} "
                               f"(4 x --max-files {budget.max_files} + 16)")
    if size > budget.max_entries * DIRECTORY_BYTES_PER_ENTRY:
        raise UploadError(413, f"{name!r}: the zip's central directory is {size:,} bytes; at most "
                               f"{budget.max_entries * DIRECTORY_BYTES_PER_ENTRY:,}")


def _clean_part(part: str) -> str:
    """A zip entry's folder name, cleaned and cut as file names are (a long Unicode name was refused)."""
    return _clean(part, NAME_BYTES) or "_"
