"""PFM files: written by edgeflow, read back by an independent reader (OpenCV), header and size checks,
both byte orders, and the native TensorFlow reader of the input pipeline (rows bottom to top)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeflow.data import checks, pfm


def flow_field(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((h, w, 2)) * 20).astype(np.float32)


@pytest.mark.parametrize("little_endian", [True, False])
def test_written_pfm_reads_back_with_opencv(tmp_path: Path, little_endian: bool) -> None:
    flow = flow_field(7, 11)
    path = tmp_path / "f.pfm"
    pfm.write_pfm(path, pfm.flow_to_pfm(flow), little_endian=little_endian)
    header = pfm.read_header(path)[0]
    assert (header.channels, header.width, header.height, header.little_endian) == (3, 11, 7, little_endian)
    assert header.text == f"PF\n11 7\n{-1.0 if little_endian else 1.0}\n"
    assert path.stat().st_size == header.bytes + 7 * 11 * 12
    ours = pfm.read_pfm(path)
    np.testing.assert_array_equal(ours[..., :2], flow)
    np.testing.assert_array_equal(ours[..., 2], 0)
    theirs = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # rows top to bottom, channels reversed
    np.testing.assert_array_equal(theirs[..., ::-1], ours)
    # the first row stored is the image's bottom row
    raw = np.frombuffer(path.read_bytes()[header.bytes:], "<f4" if little_endian else ">f4").reshape(7, 11, 3)
    np.testing.assert_array_equal(raw[0, :, :2], flow[-1])


@pytest.mark.parametrize(("data", "kind", "words"), [
    (b"P6\n2 2\n255\n", "bad_pfm_header", "malformed"),
    (b"XX", "bad_pfm_header", "not a PFM"),
    (b"PF\n2 2\n0.0\n" + bytes(48), "bad_pfm_header", "zero"),
    (b"PF\n0 2\n-1.0\n", "bad_pfm_header", "absurd"),
    (b"Pf\n2 2\n-1.0\n" + bytes(16), "bad_pfm_header", "1-channel"),
    (b"PF\n2 2\n-1.0\n" + bytes(47), "pfm_file_size", "truncated"),
    (b"PF\n2 2\n-1.0\n" + bytes(49), "pfm_file_size", "trailing"),
    (b"PF\n2 2\n-1.0", "bad_pfm_header", "malformed"),
])
def test_header_check_names_what_is_wrong(tmp_path: Path, data: bytes, kind: str, words: str) -> None:
    path = tmp_path / "bad.pfm"
    path.write_bytes(data)
    with pytest.raises(checks.FileProblem) as bad:
        checks.pfm_size(str(path))
    assert bad.value.kind == kind and words in bad.value.detail


def test_deep_check_finds_nonfinite_values_and_a_wrong_scale_sign(tmp_path: Path) -> None:
    good = tmp_path / "good.pfm"
    pfm.write_pfm(good, pfm.flow_to_pfm(flow_field(6, 9)))
    assert checks.pfm_deep_problems(str(good)) == []
    big = tmp_path / "big.pfm"
    pfm.write_pfm(big, pfm.flow_to_pfm(flow_field(6, 9)), little_endian=False)
    assert checks.pfm_deep_problems(str(big)) == []  # a big-endian file is a valid PFM
    for value, name in ((np.nan, "nan"), (np.inf, "inf")):
        flow = flow_field(6, 9)
        flow[3, 4, 1] = value
        path = tmp_path / f"{name}.pfm"
        pfm.write_pfm(path, pfm.flow_to_pfm(flow))
        (problem,) = checks.pfm_deep_problems(str(path))
        assert (problem.kind, problem.detail) == ("nonfinite_flow", "1 non-finite flow values")
    flipped = tmp_path / "flipped.pfm"
    flipped.write_bytes(good.read_bytes().replace(b"\n-1.0\n", b"\n1.00\n", 1))  # the sign lost, same length
    assert pfm.read_header(flipped)[0].little_endian is False
    (problem,) = checks.pfm_deep_problems(str(flipped))
    assert problem.kind == "pfm_byte_order" and "big-endian (positive)" in problem.detail


def test_native_reader_matches_numpy_for_both_byte_orders(tmp_path: Path) -> None:
    import tensorflow as tf

    from edgeflow.data import readers
    from edgeflow.data.ft3d import Ft3dSample, with_header

    h, w = 20, 28
    image = np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.png"), image[::-1].copy())
    flow = flow_field(h, w) * 30  # beyond the clip in places
    for little in (True, False):
        path = tmp_path / f"f{int(little)}.pfm"
        pfm.write_pfm(path, pfm.flow_to_pfm(flow), little_endian=little)
        sample = with_header(Ft3dSample("s", str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(path),
                                        flow_divisor=12.5), pfm.read_header(path)[0])
        columns = readers.FT3D.columns([sample])
        for draw, top, left in (((0.0, 0.0), 0, 0), ((0.99, 0.99), h - 8, w - 10), ((0.5, 0.25), 6, 4)):
            crop = readers.Crop(8, 10, 50.0, centre=False)
            pair, got = readers.FT3D.read(*[c[0] for c in columns], tf.constant(draw, tf.float64), crop)
            want = np.clip(flow[top:top + 8, left:left + 10] / np.float32(12.5), -50, 50)
            np.testing.assert_array_equal(got.numpy(), want)
            np.testing.assert_array_equal(pair.numpy()[..., :3], image[top:top + 8, left:left + 10])
        record, size = readers.FT3D.whole(*[c[0] for c in columns])
        assert list(size.numpy()) == [h, w]
        packed = np.frombuffer(record.numpy()[..., 6:].tobytes(), "<f4").reshape(h, w, 2)
        np.testing.assert_array_equal(packed, flow / np.float32(12.5))
