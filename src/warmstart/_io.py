"""Atomic file writing: every file warmstart writes goes to a temporary name, then is renamed."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file owner-only; give it the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~umask())
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def umask() -> int:
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")


_ALIGN = 64  # where each array's data starts in an npz we write (what .npy headers pad to)
_PAD_ID = 0xD935  # the extra-field id Android's zipalign pads local headers with


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Save arrays uncompressed in npz, atomically; only plain dtypes (loaded with
    allow_pickle=False).

    A plain npz (what `np.load` reads), except that each member's local header is padded so
    its array data starts at a multiple of 64 bytes in the file: mapped with
    `read_npz(mmap=True)`, every array is then as aligned as an allocated one, so the same
    BLAS kernels run on it and give the same bits.
    """
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"array {name!r} has dtype object; it cannot be saved without pickle")
    with (
        atomic_open(path, "wb", encoding=None) as fh,
        zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            # Local header: 30 bytes, the name, our padding block, then the 20-byte zip64
            # block that force_zip64 adds; the .npy header after it is a multiple of 64.
            fixed = fh.tell() + 30 + len(info.filename.encode()) + 4 + 20
            pad = -fixed % _ALIGN
            info.extra = struct.pack("<HH", _PAD_ID, pad) + bytes(pad)
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written directory into place, replacing an older one as atomically as a POSIX fs allows."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


@contextlib.contextmanager
def staged_dir(final_dir: str | Path) -> Iterator[Path]:
    """A temporary folder beside `final_dir` that replaces it only if the block completes."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", dir=final_dir.parent))
    try:
        yield tmp
        replace_dir(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_npz(path: str | Path, *, mmap: bool = False) -> dict[str, np.ndarray]:
    """All arrays of an npz written by `write_npz` (never unpickles).

    With `mmap`, each array is a copy-on-write map of the file rather than a copy read from
    it: pages are loaded on first touch, and processes that map the same file share them in
    the page cache instead of each holding a copy. A write to such an array stays private to
    the process (the file never changes); copy-on-write rather than read-only because
    libraries such as implicit's Cython solvers refuse read-only buffers even where they only
    read. `write_npz` stores members uncompressed and aligned, which is what makes mapping
    possible; a compressed or unaligned member is read as usual.
    """
    if not mmap:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            mapped = _mapped_member(path, fh, info)
            if mapped is None:
                with zf.open(info) as member:
                    mapped = np.lib.format.read_array(member, allow_pickle=False)
            out[name] = mapped
    return out


def _mapped_member(path: str | Path, fh: BinaryIO, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A stored (uncompressed), aligned .npy member as a copy-on-write memory map; None when it
    cannot be mapped (compressed, unaligned, empty, or holding objects, which `read_array`
    then refuses)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    fh.seek(info.header_offset)
    local = fh.read(30)  # the member's local header; its name and extra field follow
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"{path}: damaged zip entry {info.filename!r}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:  # 3.0 (utf-8 field names): read as usual
        return None
    if dtype.hasobject or math.prod(shape) == 0 or fh.tell() % _ALIGN:
        return None  # unaligned: written by an older warmstart (or not by `write_npz`)
    mapped = np.memmap(
        path, dtype=dtype, mode="c", offset=fh.tell(), shape=shape, order="F" if fortran else "C"
    )
    return mapped.view(np.ndarray)
