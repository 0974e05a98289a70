"""Read deepcomp `.dcz` files (Deep Compression: pruned, weight-shared, Huffman-coded models).

    import deepcomp, torch
    state = {k: torch.from_numpy(v) for k, v in deepcomp.load("model.dcz").items()}
    model.load_state_dict(state)
"""
import json
import os

import numpy as np

from . import _deepcomp

__all__ = ["load", "inspect", "metadata"]

# safetensors element type names -> little-endian numpy types. BF16 has no numpy type: see `load`.
_NUMPY = {
    "F32": "<f4",
    "F16": "<f2",
    "F64": "<f8",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "BOOL": "?",
    "F8_E4M3": "u1",
    "F8_E5M2": "u1",
}


def _array(shape, dtype, stored, data):
    if stored == "BF16":
        # bfloat16 is the upper half of a float32: widening is exact.
        a = (np.frombuffer(data, dtype="<u2").astype("<u4") << 16).view("<f4")
    else:
        a = np.frombuffer(data, dtype=_NUMPY[stored]).copy()
    if dtype != stored and dtype != "BF16":
        # A shared layer decoded to f32, converted to its original type (round to nearest even).
        a = a.astype(_NUMPY[dtype])
    return a.reshape(shape)


def load(path):
    """Every tensor of the file, decoded to a dense numpy array of its shape (PyTorch names), in the
    element type the model had: float32, float16, float64, int64, int32, bool, ... .

    numpy has no bfloat16: BF16 tensors come back as float32 arrays holding exactly the bf16 values
    (``torch.from_numpy(a).to(torch.bfloat16)`` restores the original bits). 8-bit float tensors
    (F8_E4M3, F8_E5M2) come back as their raw bytes in uint8 arrays. Files written before version 2
    record no types: every tensor is float32."""
    raw = _deepcomp.load_raw(os.fspath(path))
    return {
        name: _array(shape, dtype, stored, data)
        for name, (shape, dtype, stored, data) in raw.items()
    }


def metadata(path):
    """The file's metadata block as a dict (architecture, its options, dataset, input normalization
    mean / std, producer), or None for files without one (all version-1 files)."""
    text = _deepcomp.inspect(os.fspath(path))["metadata"]
    return None if text is None else json.loads(text)


def inspect(path):
    """Model id, recipe hash, per shared layer: shape, params, nonzero, density, bits, index_bits,
    codebook, bytes; the shapes of the raw tensors (``dense``: float32; ``typed``: (shape, type));
    ``layer_dtypes``; and ``metadata``, parsed (or None)."""
    info = _deepcomp.inspect(os.fspath(path))
    if info["metadata"] is not None:
        info["metadata"] = json.loads(info["metadata"])
    return info
