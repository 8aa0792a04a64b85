"""Model arrays on disk: read, or memory-mapped copy-on-write, never unpickled."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from warmstart._io import read_npz, write_npz


def test_mapped_arrays_equal_read_ones_and_leave_the_file_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "factors": rng.normal(size=(50, 8)).astype(np.float32),
        "fortran": np.asfortranarray(rng.normal(size=(7, 3))),
        "ids": np.arange(11, dtype=np.int64),
        "scalar": np.asarray(3.5),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "text": np.asarray(["a", "bc"]),
    }
    path = tmp_path / "state.npz"
    write_npz(path, **arrays)
    read, mapped = read_npz(path), read_npz(path, mmap=True)
    assert set(read) == set(mapped) == set(arrays)
    for name, expected in arrays.items():
        for got in (read[name], mapped[name]):
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert np.array_equal(got, expected)
    assert type(mapped["factors"]) is np.ndarray  # a plain view, not an np.memmap
    assert mapped["fortran"].flags.f_contiguous
    # Copy-on-write: a write stays in this process; the file, and a new map of it, keep 0.
    before = float(mapped["factors"][0, 0])
    mapped["factors"][0, 0] = before + 1.0
    assert read_npz(path, mmap=True)["factors"][0, 0] == before
    assert read_npz(path)["factors"][0, 0] == before


def test_compressed_members_are_read_and_objects_refused(tmp_path: Path) -> None:
    path = tmp_path / "packed.npz"
    np.savez_compressed(path, a=np.arange(6.0).reshape(2, 3))
    with zipfile.ZipFile(path) as z:
        assert z.infolist()[0].compress_type == zipfile.ZIP_DEFLATED
    assert np.array_equal(read_npz(path, mmap=True)["a"], np.arange(6.0).reshape(2, 3))
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, o=np.asarray([{"x": 1}], dtype=object))
    for mmap in (False, True):
        with pytest.raises(ValueError, match="pickle"):
            read_npz(pickled, mmap=mmap)


def test_written_arrays_start_aligned_and_older_files_still_read(tmp_path: Path) -> None:
    arrays = {f"a{j}": np.arange(j + 3, dtype=np.float32) for j in range(5)}
    path = tmp_path / "aligned.npz"
    write_npz(path, **arrays)
    mapped = read_npz(path, mmap=True)
    for name, arr in arrays.items():
        assert mapped[name].ctypes.data % 64 == 0
        assert np.array_equal(mapped[name], arr)
    with np.load(path) as z:  # still a plain npz
        assert np.array_equal(z["a4"], arrays["a4"])
    older = tmp_path / "older.npz"
    np.savez(older, **arrays)  # numpy's own layout: data not aligned in the file
    for name, arr in read_npz(older, mmap=True).items():
        assert np.array_equal(arr, arrays[name])
