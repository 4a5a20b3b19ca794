"""Counter-based random numbers: every number a hash of where it is used, so any device draws the same stream.

A counter-based generator (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3") has no state to
carry from draw to draw: the n-th number of a stream is f(key, n) for a bijective mixing function f. Here f is
the output function of SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators",
Fig. 16, the constants of Stafford's "Mix13"): the n-th 64-bit word of the stream with key k is

    z = k + (n + 1) γ  (mod 2^64),  γ = 0x9E3779B97F4A7C15 (the golden ratio's fraction, odd)
    z ← (z ⊕ (z ≫ 30)) · 0xBF58476D1CE4E5B9,  z ← (z ⊕ (z ≫ 27)) · 0x94D049BB133111EB,  z ← z ⊕ (z ≫ 31)

and a training step's streams have the key k = f(f(f(seed) + step) + stream). From a word:
    uniform   u = ⌊z / 2^11⌋ · 2^−53 ∈ [0, 1)          (the top 53 bits: every double of that grid equally likely)
    integer   ⌊u · n⌋ ∈ {0, …, n − 1}                   (bias ≤ n / 2^53: nil for datasets and T of any size here)
    normal    √(−2 log(1 − u₁)) · cos(2π u₂)           (Box & Muller 1958, one of its pair; u₁, u₂ the words 2i, 2i+1)

Why a training run on a GPU wants one (`backend`'s docstring has the whole trade-off): each element is computed
by its own thread with no state, so a batch, its timesteps and its noise are drawn by three kernels in device
memory, and the generator's "state" in a checkpoint is nothing but the step. The same functions run on NumPy, so a
run drawn this way on the GPU resumes on the CPU with the same numbers: the integers exactly, the normals to the
last bit of log and cos, which CUDA and the C library round alike to within an ulp or two.

Quality: SplitMix64 passes BigCrush (Steele et al. 2014, §5); `tests/test_train.py` checks means, variances and
uniformity of what is drawn here. Streams of different keys do not overlap within 2^40 draws but with
probability about 2^40 / 2^64 per pair.
"""
import numpy as np

from minidiff.accel.backend import get_xp
from minidiff.accel.fused import fusable

GOLDEN = 0x9E3779B97F4A7C15  # γ, Steele et al. 2014, §2
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # Stafford's Mix13 (Steele et al. 2014, Fig. 16)
MASK = (1 << 64) - 1
TWO_TO_MINUS_53 = 2.0 ** -53
STREAMS = {"data": 0, "t": 1, "noise": 2}  # the independent streams of one training step


def mix64(z):
    """SplitMix64's mixing function on a Python int (the keys are made on the host)."""
    z = ((z ^ (z >> 30)) * MIX1) & MASK
    z = ((z ^ (z >> 27)) * MIX2) & MASK
    return z ^ (z >> 31)


def stream_key(seed, step, stream):
    """The key of one stream of one training step: f(f(f(seed) + step) + stream), each sum mod 2^64."""
    return mix64((mix64((mix64(seed & MASK) + step) & MASK) + STREAMS[stream]) & MASK)


def words(key, n):
    """The first n words of the stream with this key, uint64 (n,), as NumPy or CuPy computes them."""
    xp = get_xp()
    z = xp.arange(1, n + 1, dtype=xp.uint64) * xp.uint64(GOLDEN) + xp.uint64(key)
    z = (z ^ (z >> xp.uint64(30))) * xp.uint64(MIX1)
    z = (z ^ (z >> xp.uint64(27))) * xp.uint64(MIX2)
    return z ^ (z >> xp.uint64(31))


@fusable("uniform")
def uniform(key, n):
    """n uniforms in [0, 1), float64."""
    xp = get_xp()
    return (words(key, n) >> xp.uint64(11)).astype(xp.float64) * TWO_TO_MINUS_53


@fusable("integers")
def integers(key, n, high):
    """n integers uniform on {0, …, high − 1}, int64."""
    return (uniform(key, n) * high).astype(np.int64)


@fusable("normal")
def normal(key, shape, dtype):
    """Standard normals of `shape`, computed in float64 and rounded to `dtype`."""
    size = int(np.prod(shape))
    xp = get_xp()
    u = uniform(key, 2 * size).reshape(size, 2)             # u₁ = word 2i, u₂ = word 2i + 1
    z = xp.sqrt(-2.0 * xp.log(1.0 - u[:, 0])) * xp.cos(2.0 * np.pi * u[:, 1])   # Box & Muller 1958
    return z.astype(dtype).reshape(shape)


def scalar_uniform(key):
    """The first uniform of a stream, computed on the host (for one number, no device round trip)."""
    z = mix64((key + GOLDEN) & MASK)
    return (z >> 11) * TWO_TO_MINUS_53
