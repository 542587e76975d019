"""The Middlebury .flo reader/writer against files built byte by byte, as another tool would."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgeflow.data.flo import FloError, expected_size, read_flo, read_header, write_flo


def _flo_bytes(flow: np.ndarray) -> bytes:
    """Independent encoder: struct only, value by value, row-major u, v interleaved."""
    h, w, _ = flow.shape
    out = [b"PIEH", struct.pack("<i", w), struct.pack("<i", h)]
    for y in range(h):
        for x in range(w):
            out.append(struct.pack("<ff", float(flow[y, x, 0]), float(flow[y, x, 1])))
    return b"".join(out)


@pytest.fixture
def flow() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.standard_normal((5, 7, 2)) * 30).astype(np.float32)


def test_magic_is_the_float_202021_25_little_endian() -> None:
    assert struct.pack("<f", 202021.25) == b"PIEH"
    assert expected_size(512, 384) == 1_572_876


def test_struct_built_file_reads_back_identically(tmp_path, flow) -> None:
    path = tmp_path / "a.flo"
    path.write_bytes(_flo_bytes(flow))
    got = read_flo(path)
    assert got.dtype == np.float32 and got.shape == (5, 7, 2)
    assert np.array_equal(got, flow)
    assert got[2, 6, 0] == flow[2, 6, 0] and got[4, 0, 1] == flow[4, 0, 1]  # u, v not swapped, row-major


def test_written_file_is_byte_identical_to_struct_encoding(tmp_path, flow) -> None:
    path = tmp_path / "b.flo"
    write_flo(path, flow)
    assert path.read_bytes() == _flo_bytes(flow)
    assert read_header(path) == (7, 5, expected_size(7, 5))


def test_write_converts_float64_and_round_trips(tmp_path, flow) -> None:
    path = tmp_path / "c.flo"
    write_flo(path, flow.astype(np.float64))
    assert np.array_equal(read_flo(path), flow)


def test_wrong_magic_names_the_file(tmp_path, flow) -> None:
    path = tmp_path / "bad_magic.flo"
    path.write_bytes(b"PIEX" + _flo_bytes(flow)[4:])
    with pytest.raises(FloError, match=r"bad_magic\.flo: not a \.flo file \(magic"):
        read_flo(path)


def test_truncated_data_is_an_error(tmp_path, flow) -> None:
    path = tmp_path / "short.flo"
    path.write_bytes(_flo_bytes(flow)[:-4])
    with pytest.raises(FloError, match=r"short\.flo: truncated \.flo: 288 bytes, a 7x5 flow needs 292"):
        read_flo(path)


def test_truncated_header_is_an_error(tmp_path) -> None:
    path = tmp_path / "hdr.flo"
    path.write_bytes(b"PIEH\x07\x00")
    with pytest.raises(FloError, match=r"hdr\.flo: truncated \.flo header \(6 of 12 bytes\)"):
        read_flo(path)


def test_trailing_bytes_mean_a_dimension_mismatch(tmp_path, flow) -> None:
    path = tmp_path / "long.flo"
    path.write_bytes(_flo_bytes(flow) + b"\x00" * 8)
    with pytest.raises(FloError, match=r"long\.flo: 8 trailing bytes after a 7x5 flow"):
        read_flo(path)
    # Same bytes with the header claiming a smaller size: still caught
    wrong = bytearray(_flo_bytes(flow))
    wrong[4:8] = struct.pack("<i", 6)
    path.write_bytes(bytes(wrong))
    with pytest.raises(FloError, match="trailing bytes"):
        read_flo(path)


@pytest.mark.parametrize("w, h", [(0, 5), (-3, 5), (7, 1 << 20), (2**31 - 1, 2**31 - 1)])
def test_absurd_dimensions_are_rejected_before_reading(tmp_path, w, h) -> None:
    path = tmp_path / "absurd.flo"
    path.write_bytes(struct.pack("<4sii", b"PIEH", w, h) + b"\x00" * 64)
    with pytest.raises(FloError, match=rf"absurd\.flo: absurd \.flo dimensions {w}x{h}"):
        read_flo(path)


def test_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(FloError, match=r"nope\.flo: cannot read"):
        read_flo(tmp_path / "nope.flo")


def test_write_rejects_a_wrong_shape(tmp_path) -> None:
    with pytest.raises(FloError, match=r"x\.flo: flow must have shape \(H, W, 2\)"):
        write_flo(tmp_path / "x.flo", np.zeros((4, 4, 3), np.float32))
    assert not (tmp_path / "x.flo").exists()
