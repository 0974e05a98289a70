import numpy as np
import pytest

import deepcomp
from deepcomp import _deepcomp


@pytest.fixture
def dcz(tmp_path):
    p = tmp_path / "m.dcz"
    _deepcomp.write_example(
        str(p), [("fc1", [30, 700], 0.1, 5), ("conv1", [4, 3, 3, 3], 0.5, 8)], 7
    )
    return p


def test_load_equals_decode_of_stored_parts(dcz):
    tensors = deepcomp.load(dcz)
    assert set(tensors) == {"fc1.weight", "fc1.bias", "conv1.weight", "conv1.bias"}
    for name in ["fc1.weight", "conv1.weight"]:
        shape, codebook, positions, codes = _deepcomp.sparse_parts(str(dcz), name)
        expected = np.zeros(int(np.prod(shape)), dtype=np.float32)
        expected[np.array(positions, dtype=np.int64)] = np.array(codebook, dtype=np.float32)[codes]
        got = tensors[name]
        assert got.dtype == np.float32
        assert list(got.shape) == shape
        np.testing.assert_array_equal(got.ravel(), expected)
    assert tensors["fc1.bias"].shape == (30,)


def test_inspect(dcz):
    info = deepcomp.inspect(dcz)
    assert info["model"] == "example"
    fc = info["layers"]["fc1.weight"]
    assert fc["params"] == 21000 and fc["bits"] == 5
    assert 0.05 < fc["density"] < 0.15
    assert info["dense"]["conv1.bias"] == [4]


def test_bad_file_names_it(tmp_path):
    bad = tmp_path / "broken.dcz"
    bad.write_bytes(b"not a dcz")
    with pytest.raises(ValueError, match="broken.dcz"):
        deepcomp.load(bad)


def test_torch_load_state_dict(dcz):
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(700, 30)
    t = deepcomp.load(dcz)
    lin.load_state_dict({"weight": torch.from_numpy(t["fc1.weight"]), "bias": torch.from_numpy(t["fc1.bias"])})
    assert torch.equal(lin.weight.detach(), torch.from_numpy(t["fc1.weight"]))


def test_original_dtypes_and_metadata(tmp_path):
    p = tmp_path / "typed.dcz"
    _deepcomp.write_typed_example(str(p))
    t = deepcomp.load(p)
    assert t["fc.weight"].dtype == np.float16
    np.testing.assert_array_equal(
        t["fc.weight"], np.array([[0, -0.5, 0], [0, 0, 0.1]], dtype=np.float16)
    )
    assert t["bn.num_batches_tracked"].dtype == np.int64
    assert t["bn.num_batches_tracked"].shape == ()
    assert int(t["bn.num_batches_tracked"]) == -3
    assert t["fc.bias"].dtype == np.float16
    np.testing.assert_array_equal(t["fc.bias"], np.array([1.0, -2.0], dtype=np.float16))
    # bfloat16: float32 holding the exact values.
    assert t["bn.weight"].dtype == np.float32
    np.testing.assert_array_equal(t["bn.weight"], np.array([1.0, -0.5], dtype=np.float32))
    meta = deepcomp.metadata(p)
    assert meta["arch"] == "lenet300" and meta["std"] == [0.25]
    info = deepcomp.inspect(p)
    assert info["typed"]["bn.num_batches_tracked"] == ([], "I64")
    assert info["layer_dtypes"] == ["F16"]


def test_version_1_file_reads_as_float32_without_metadata(dcz):
    assert deepcomp.metadata(dcz) is None
    import pathlib

    v1 = pathlib.Path(__file__).resolve().parents[2] / "crates/format/tests/data/v1-tiny.dcz"
    t = deepcomp.load(v1)
    assert t["fc.w"].dtype == np.float32 and t["fc.w"].shape == (2, 10)
    np.testing.assert_array_equal(t["fc.b"], np.array([0.25, -3.0], dtype=np.float32))
    assert deepcomp.metadata(v1) is None
