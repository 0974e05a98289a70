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
