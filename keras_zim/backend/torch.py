"""PyTorch: eager, seeded `torch.Generator` per draw (a pure function of the seed)."""

import keras
import torch

_MASK = (1 << 64) - 1


def _mix(value):
    """SplitMix64's finaliser: a bijection of 64-bit ints that spreads every bit."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def _int(seed):
    low, high = (int(s) & 0xFFFFFFFF for s in torch.as_tensor(seed).tolist())
    return low | high << 32


def _generator(seed):
    device = keras.ops.zeros(()).device  # where Keras puts new tensors
    generator = torch.Generator(device=device)
    generator.manual_seed(_mix(_int(seed)) & ((1 << 63) - 1))
    return generator, device


def fold_in(seed, data):
    value = _mix(_int(seed) ^ _mix(int(data) & _MASK))
    words = [value & 0xFFFFFFFF, value >> 32]
    return torch.tensor([w - (1 << 32) if w >= 1 << 31 else w for w in words], dtype=torch.int32)


def uniform(shape, seed, dtype):
    generator, device = _generator(seed)
    return torch.rand(tuple(int(s) for s in shape), generator=generator, dtype=getattr(torch, dtype), device=device)


def bits24(shape, seed):
    generator, device = _generator(seed)
    return torch.randint(0, 1 << 24, tuple(int(s) for s in shape), generator=generator, dtype=torch.int32, device=device)


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser on int64 holding uint32 values, as keras_zim.backend.tensorflow's."""
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        x = ((x ^ (x >> shift)) * factor) & 0xFFFFFFFF
    return x ^ (x >> 16)


def hash32(counter, key):
    x = torch.as_tensor(counter).to(torch.int64) & 0xFFFFFFFF
    k = [int(w) & 0xFFFFFFFF for w in torch.as_tensor(key).tolist()]
    h = _fmix32((_fmix32(x ^ k[0]) + k[1]) & 0xFFFFFFFF)
    return (h - ((h >> 31) << 32)).to(torch.int32)


def gather(values, index):
    return values[index.long()]


def scatter_add(counts, index, live):
    return counts.index_add(0, index.long(), live.to(counts.dtype))


def high_half(x):
    return torch.bitwise_and(x.view(torch.int32), -4096).view(torch.float32)


def jit(fn, static_argnames=()):
    return fn  # Keras runs the torch backend eagerly


def has_float64():
    return True


def gradients(loss, variables):
    return torch.autograd.grad(loss(), [v.value for v in variables], allow_unused=True)
