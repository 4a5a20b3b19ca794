#!/bin/bash
# The GPU check of issue #7, as one call of the device tool (a machine with one NVIDIA GPU, CuPy and PyTorch):
#   (a) autograd from the carried wheel (.whl/, git-ignored: pass carry [".whl"]),
#   (b) the machine: nvidia-smi and the versions, then each fused kernel once against its plain CuPy formula (every
#       failure listed, where pytest -x would stop at the first),
#   (c) the GPU tests: tests/test_gpu.py and tests/test_backend.py,
#   (d) the GPU benchmark (benchmarks/gpu.py), its results copied to $OUT.
# Each phase has its own time limit, so that one that hangs leaves the others their time. Run from the repository
# root:  bash benchmarks/gpu_check.sh   (OUT defaults to /tmp/gpu_check).
set -u
OUT=${OUT:-/tmp/gpu_check}
MAX_BATCH=${MAX_BATCH:-1048576}
mkdir -p "$OUT"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

{ nvidia-smi; python3 -c "import sys, numpy, cupy, autograd, click; print('python', sys.version.split()[0], '| numpy',
numpy.__version__, '| cupy', cupy.__version__, '| autograd', autograd.__file__, '| click', click.__version__)";
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } 2>&1 | tee "$OUT/machine.txt"

echo "=== fused kernels against plain CuPy, float32 and float64"
timeout 60 python3 - <<'EOF' 2>&1 | tee "$OUT/kernels.txt"
import numpy as np
from minidiff import backend, counter, optim, primitives
from minidiff.primitives import linear_silu, residual_linear_silu, sinusoids, value_and_vjp, weighted_squared_error
from minidiff.train import TrainConfig, make_problem, noisy_and_target

def run_all(rng_seed, dtype):
    rng, xp = np.random.default_rng(rng_seed), backend.get_xp()
    d = lambda *shape: xp.asarray(rng.standard_normal(shape), dtype=dtype)
    x, W, Wr, b, h = d(64, 34), d(34, 16), d(16, 16), d(16), d(64, 16)
    out = {}
    def traced(name, f, *arrays):
        value, vjp = value_and_vjp(f, *arrays)
        out[name] = [value] + vjp(xp.ones_like(value))
        out[name + " plain"] = [f(*arrays)]
    traced("linear_silu", lambda W, b: linear_silu(x, W, b), W, b)
    traced("residual_linear_silu", lambda h, W, b: residual_linear_silu(h, W, b), h, Wr, b)
    traced("weighted_squared_error", lambda p: weighted_squared_error(p, h, xp.abs(h[:, 0])), h)
    out["sinusoids"] = [sinusoids(x[:, :2], xp.asarray([1.0, 3.0, 0.5], dtype=dtype))]
    problem = make_problem(TrainConfig(T=100, dtype=np.dtype(dtype).name))
    out["noisy_and_target"] = list(noisy_and_target(problem, x[:, :2], h[:, :2], xp.asarray(rng.integers(0, 100, 64))))
    p, g = {"W": W, "b": b}, {"W": d(34, 16), "b": d(16)}
    state = {"step": 3, "m.W": xp.abs(d(34, 16)), "v.W": xp.abs(d(34, 16)), "m.b": xp.abs(d(16)), "v.b": xp.abs(d(16))}
    new, s = optim.adam_update(p, g, state, 1e-2, weight_decay=0.1, grad_scale=0.5)
    out["adam"] = [new["W"], new["b"], s["m.W"], s["v.b"]]
    out["ema"] = [optim.ema_update(p, new, 0.9)["W"]]
    key = counter.stream_key(1, 2, "noise")
    out["counter"] = [counter.uniform(key, 100), counter.integers(key, 100, 7), counter.normal(key, (50, 2), dtype)]
    out["sum_rows"] = [primitives._sum_rows(h)]
    return {k: [backend.to_numpy(a) for a in v] for k, v in out.items()}

import os
for dtype in (np.float32, np.float64):
    results = {}
    for fused in ("0", "1"):
        os.environ[backend.FUSED_VARIABLE] = fused
        backend.use_device("gpu")
        try:
            results[fused] = run_all(0, dtype)
        except Exception as err:
            import traceback; traceback.print_exc()
            results[fused] = None
    if results["0"] is None or results["1"] is None:
        print(dtype.__name__, "FAILED to run (traceback above)")
        continue
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for name in results["0"]:
        for i, (plain, fused) in enumerate(zip(results["0"][name], results["1"][name])):
            err = np.max(np.abs(plain.astype(float) - fused.astype(float))) / max(1e-30, np.max(np.abs(plain)))
            print(f"{dtype.__name__:8} {name:26} output {i}: relative difference {err:.2e} "
                  f"{'ok' if err <= tol else 'FAIL'}")
EOF

echo "=== tests"
timeout 170 python3 -m pytest tests/test_gpu.py tests/test_backend.py -q -x -rs -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest.txt" | tail -40

echo "=== benchmark"
timeout 170 python3 benchmarks/gpu.py --max-batch "$MAX_BATCH" 2>&1 | tee "$OUT/benchmark.txt" | tail -60
cp benchmarks/results/gpu.json benchmarks/results/gpu.md "$OUT/" 2>/dev/null
ls -la "$OUT"
