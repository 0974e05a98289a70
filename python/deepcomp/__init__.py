"""Read deepcomp `.dcz` files (Deep Compression: pruned, weight-shared, Huffman-coded models).

    import deepcomp, torch
    state = {k: torch.from_numpy(v) for k, v in deepcomp.load("model.dcz").items()}
    model.load_state_dict(state)
"""
import os

import numpy as np

from . import _deepcomp

__all__ = ["load", "inspect"]


def load(path):
    """Every tensor of the file, decoded to a dense float32 numpy array of its shape (PyTorch names)."""
    raw = _deepcomp.load_raw(os.fspath(path))
    return {
        name: np.frombuffer(data, dtype="<f4").reshape(shape).copy()
        for name, (shape, data) in raw.items()
    }


def inspect(path):
    """Model id, recipe hash, per shared layer: shape, params, nonzero, density, bits, index_bits,
    codebook, bytes; and the shapes of the raw tensors."""
    return _deepcomp.inspect(os.fspath(path))
