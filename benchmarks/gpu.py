"""The numbers of the README's `## GPU` section: minidiff's train step on CuPy against PyTorch eager CUDA and NumPy,
on one machine in one run.

    python benchmarks/gpu.py                        # batch 256 … 1,048,576 (a few minutes on an H100)
    python benchmarks/gpu.py --max-batch 131072     # fewer sizes
    python benchmarks/gpu.py --numpy-max-batch 0    # leave NumPy out

Writes benchmarks/results/gpu.json (every number) and gpu.md (the tables the README quotes). PyTorch is optional:
without it its columns are empty. Neither PyTorch nor CuPy is a dependency of minidiff or of its tests.

What is measured (benchmarks/cpu.py's step, on the GPU)
- Step: `train.loss_and_grad` (forward and backward) and `optim.adam_update` for the default denoiser
  (34-256-256-256-2 MLP, SiLU, residual) and problem (ε target, cosine schedule), fp32, then `float(loss)` — one
  read back, as PyTorch's `loss.item()`. Competitors: NumPy on the CPU (every core, up to --numpy-max-batch and
  while a step takes under --numpy-max-seconds), CuPy with the fused kernels (kernels.py), CuPy without them
  (MINIDIFF_FUSED=0: every elementwise operation a ufunc), PyTorch eager CUDA (nn.Linear, F.silu,
  `loss.backward()`, `torch.optim.Adam`, as benchmarks/cpu.py builds it). All start from the same weights and
  batch, and their first losses must agree.
- Train step: all of `train.train_step` on CuPy — drawing the batch, t and noise on the device (counter
  randomness), the loss, clipping, the guard's read back, Adam and the EMA — what a training run pays per step.
- Kernels per step: CUDA kernels launched by one step of each GPU competitor, counted by the CUDA profiler
  (torch.profiler's CUPTI tracing sees every kernel of the process, CuPy's too), with the GPU time of the largest.

How: each time is the median wall time over many steps (each step ends with its read back, so the device is
idle between steps, as in training), after warm-up steps that compile the kernels; the competitors alternate in
rounds, so that a change in the machine's state falls on all of them. matmul is plain fp32 in both frameworks
(CuPy without CUPY_TF32, PyTorch with allow_tf32 off, their defaults).
"""
import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
BATCHES = (256, 1024, 4096, 16384, 65536, 131072, 262144, 524288, 1048576)
DTYPE = "float32"
ROUNDS = 5  # the competitors alternate this many times per batch size
SECONDS_PER_CELL = 1.0  # measuring time per competitor and batch size
MIN_STEPS = 3  # at least this many timed steps of each competitor per round
GOAL_BATCH, GOAL_RATIO = 131072, 1.5  # the goal: CuPy / PyTorch ≤ 1.5 at batch ≥ 131,072
LR = 1e-3
TOP_KERNELS = 6

sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


# ---------------------------------------------------------------------------------------------------------------
# The competitors: each a function of no arguments that does one step and returns the loss as a Python float

def host_problem(batch):
    """The default problem, params and batch on the host (benchmarks/cpu.py's `default_problem`)."""
    import numpy as np
    from cpu import default_problem
    from minidiff.accel import backend
    backend.use_device("cpu")
    return default_problem(np, DTYPE, batch)


def minidiff_step(device, fused, batch):
    """cpu.py's step (loss_and_grad, Adam, float(loss)) on `device`; fused: CuPy's kernels on or off."""
    from cpu import minidiff_step as make_step
    from minidiff.accel import backend
    from minidiff.train import make_problem
    config, _, params, data = host_problem(batch)
    os.environ[backend.FUSED_VARIABLE] = "1" if fused else "0"
    backend.use_device(device)
    problem = make_problem(config)
    step = make_step(backend.tree_to_device(params), problem, tuple(backend.to_device(a) for a in data))
    return _on(device, fused, step)


def train_step(batch):
    """All of train.train_step on the GPU with counter randomness: what a training run pays per step."""
    import numpy as np
    from minidiff.accel import backend
    from minidiff import data
    from minidiff.runs import loop as run
    from minidiff.train import TrainConfig, make_problem, train_step as one_step
    os.environ[backend.FUSED_VARIABLE] = "1"
    backend.use_device("gpu")
    config = TrainConfig(batch_size=batch, randomness="counter", dtype=DTYPE, steps=10 ** 9)
    problem = make_problem(config)
    data_rng, init_rng, train_rng, _ = run.generators(0)
    x_train = backend.to_device(data.sample_dataset(config.dataset, config.n_train, data_rng).astype(np.float32))
    state = {"state": run.initial_state(config, 2, init_rng, train_rng)}

    def step():
        state["state"], loss, *_ = one_step(state["state"], problem, config, x_train)
        return loss
    return _on("gpu", True, step)


def _on(device, fused, step):
    """The step, run with the backend switched to its own device (the competitors alternate in one process)."""
    from minidiff.accel import backend

    def run():
        os.environ[backend.FUSED_VARIABLE] = "1" if fused else "0"
        backend.use_device(device)
        return step()
    return run


def torch_step(torch, batch):
    """cpu.py's PyTorch eager step, with the model, the tables and the batch on the GPU."""
    from cpu import TorchDenoiser, torch_loss_step
    from minidiff import nn
    config, problem, params, data = host_problem(batch)
    model = TorchDenoiser(torch, params, nn.time_frequencies(params["in.W"].shape[0] - 2, problem.dtype)).cuda()
    model.omega = model.omega.cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    return torch_loss_step(torch, model, optimizer, problem, data, device="cuda")


# ---------------------------------------------------------------------------------------------------------------
# Timing and counting

def race(competitors, seconds):
    """{name: {"wall": median s, "n": steps}}: the competitors alternate in ROUNDS rounds of several steps."""
    per_step = {}
    for name, f in competitors.items():
        f()
        start = time.perf_counter()
        f()
        per_step[name] = time.perf_counter() - start
    samples = {name: [] for name in competitors}
    for _ in range(ROUNDS):
        for name, f in competitors.items():
            for _ in range(max(MIN_STEPS, round(seconds / ROUNDS / per_step[name]))):
                start = time.perf_counter()
                f()
                samples[name].append(time.perf_counter() - start)
    return {name: {"wall": sorted(v)[len(v) // 2], "n": len(v)} for name, v in samples.items()}


def count_kernels(torch, step):
    """(kernels launched by one step, [(name, launches, GPU µs)] of the largest), by the CUDA profiler."""
    from torch.profiler import ProfilerActivity, profile
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        if e.key.startswith(("Memcpy", "Memset")) or getattr(e, "device_type", None) is not None and \
                str(e.device_type).endswith("CPU"):
            continue
        gpu_us = getattr(e, "device_time_total", None)
        gpu_us = getattr(e, "cuda_time_total", 0.0) if gpu_us is None else gpu_us
        if gpu_us > 0 or e.count:
            rows.append((e.key[:60], int(e.count), float(gpu_us)))
    rows = [r for r in rows if r[2] > 0]
    return sum(r[1] for r in rows), sorted(rows, key=lambda r: -r[2])[:TOP_KERNELS]


def cell(torch, batch, args):
    """One row of the table: times of every competitor at this batch size, their first losses, kernel counts."""
    competitors, errors = {}, {}
    makers = {"cupy": lambda: minidiff_step("gpu", True, batch),
              "cupy_unfused": lambda: minidiff_step("gpu", False, batch),
              "train_step": lambda: train_step(batch)}
    if torch is not None:
        makers["torch"] = lambda: torch_step(torch, batch)
    if batch <= args.numpy_max_batch:
        makers["numpy"] = lambda: minidiff_step("cpu", False, batch)
    for name, make in makers.items():
        try:
            competitors[name] = make()
        except Exception as err:  # noqa: BLE001  (a competitor that fails is reported, the others still run)
            errors[name] = f"{type(err).__name__}: {err}"
    first = {}
    for name, f in list(competitors.items()):
        try:
            first[name] = f()
        except Exception as err:  # noqa: BLE001
            errors[name] = f"{type(err).__name__}: {err}"
            del competitors[name]
    slow = [n for n in ("numpy",) if n in competitors and _time_once(competitors[n]) > args.numpy_max_seconds]
    for name in slow:
        errors[name] = f"left out: one step takes more than {args.numpy_max_seconds} s"
        del competitors[name]
    result = {"batch": batch, "first_loss": first, "errors": errors,
              "times": race(competitors, args.seconds) if competitors else {}}
    same = [first[n] for n in ("cupy", "cupy_unfused", "torch", "numpy") if n in first]
    result["loss_match"] = all(abs(v - same[0]) <= 1e-4 * abs(same[0]) for v in same) if same else None
    if torch is not None and args.count_kernels:
        result["kernels"] = {}
        for name in ("cupy", "cupy_unfused", "train_step", "torch"):
            if name in competitors:
                try:
                    result["kernels"][name] = count_kernels(torch, competitors[name])
                except Exception as err:  # noqa: BLE001
                    errors[f"kernels {name}"] = f"{type(err).__name__}: {err}"
    t = result["times"]
    print(f"  batch {batch}: " + ", ".join(f"{k} {v['wall'] * 1e3:.2f} ms" for k, v in t.items())
          + (f"  errors: {errors}" if errors else ""), flush=True)
    return result


def _time_once(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------
# The result files

def machine(torch):
    import numpy as np
    from minidiff.accel import backend
    cupy = backend.use_device("gpu")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    backend.use_device("cpu")
    return {"gpu": name, "gpu_memory_gib": round(props["totalGlobalMem"] / 2 ** 30, 1), "cpu": cpu,
            "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "torch": None if torch is None else torch.__version__,
            "torch_tf32": None if torch is None else bool(torch.backends.cuda.matmul.allow_tf32),
            "cupy_tf32": os.environ.get("CUPY_TF32", "0")}


def markdown(result):
    m = result["machine"]
    ms = lambda t, name: f"{t[name]['wall'] * 1e3:.2f}" if name in t else "–"  # noqa: E731
    ratio = lambda t, a, b: f"{t[a]['wall'] / t[b]['wall']:.2f}" if a in t and b in t else "–"  # noqa: E731
    lines = ["# GPU performance", "",
             f"Measured {result['date']} by `python benchmarks/gpu.py` on one **{m['gpu']}** "
             f"({m['gpu_memory_gib']} GiB), "
             f"{m['cpu']} ({m['cores']} cores), Python {m['python']}, NumPy {m['numpy']}, CuPy {m['cupy']} (CUDA "
             f"runtime {m['cuda_runtime']}), " + (f"PyTorch {m['torch']}" if m["torch"] else "no PyTorch") + ".", "",
             "## Train step: forward, backward and Adam, fp32", "",
             "Median wall time per step in ms, the default 34-256-256-256-2 MLP, each step ending with its loss read "
             f"back. Ratio = CuPy / PyTorch eager CUDA (goal ≤ {GOAL_RATIO} at batch ≥ {GOAL_BATCH:,}). "
             "`unfused`: CuPy without minidiff's fused kernels. `train_step`: the whole step of a training run on "
             "CuPy (device-drawn batch, clipping, guard, Adam, EMA). NumPy: the CPU, every core.", "",
             "| batch | NumPy (CPU) | CuPy | CuPy unfused | PyTorch CUDA | **CuPy / PyTorch** | unfused / PyTorch | "
             "NumPy / CuPy | train_step |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in result["cells"]:
        t = c["times"]
        lines.append(f"| {c['batch']:,} | {ms(t, 'numpy')} | {ms(t, 'cupy')} | {ms(t, 'cupy_unfused')} | "
                     f"{ms(t, 'torch')} | **{ratio(t, 'cupy', 'torch')}** | {ratio(t, 'cupy_unfused', 'torch')} | "
                     f"{ratio(t, 'numpy', 'cupy')} | {ms(t, 'train_step')} |")
    counted = [c for c in result["cells"] if c.get("kernels")]
    if counted:
        lines += ["", "## Kernels per step", "",
                  "CUDA kernels launched by one step (the CUDA profiler's count), and the largest by GPU time at the "
                  "largest batch measured.", "", "| batch | CuPy | CuPy unfused | train_step | PyTorch |",
                  "|---:|---:|---:|---:|---:|"]
        for c in counted:
            k = c["kernels"]
            n = lambda name: str(k[name][0]) if name in k else "–"  # noqa: E731
            lines.append(f"| {c['batch']:,} | {n('cupy')} | {n('cupy_unfused')} | {n('train_step')} | {n('torch')} |")
        last = counted[-1]
        for name in ("cupy", "torch"):
            if name in last["kernels"]:
                lines += ["", f"{name} at batch {last['batch']:,}: " + "; ".join(
                    f"`{k}` ×{count} {us / 1e3:.2f} ms" for k, count, us in last["kernels"][name][1])]
    agree = [c["batch"] for c in result["cells"] if c.get("loss_match")]
    if agree:
        lines += ["", f"The competitors' first losses (same weights, same batch) agree to 1e-4 at batch "
                      f"{', '.join(f'{b:,}' for b in agree)}."]
    problems = [(c["batch"], c["errors"]) for c in result["cells"] if c["errors"]]
    mismatch = [c["batch"] for c in result["cells"] if c.get("loss_match") is False]
    if problems or mismatch:
        lines += ["", "## Notes", ""]
        lines += [f"- batch {b}: {e}" for b, e in problems]
        lines += [f"- batch {b}: the first losses disagree beyond 1e-4" for b in mismatch]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-batch", type=int, default=BATCHES[-1], help="largest batch size")
    parser.add_argument("--numpy-max-batch", type=int, default=65536, help="largest batch size for NumPy (0: none)")
    parser.add_argument("--numpy-max-seconds", type=float, default=2.0, help="leave NumPy out past this step time")
    parser.add_argument("--seconds", type=float, default=SECONDS_PER_CELL, help="measuring time per competitor")
    parser.add_argument("--no-kernel-count", dest="count_kernels", action="store_false")
    parser.add_argument("--out", default=RESULTS, help="folder for gpu.json and gpu.md")
    args = parser.parse_args()
    torch = _import_torch()
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
    result = {"machine": machine(torch), "date": time.strftime("%Y-%m-%d %H:%M"), "cells": []}
    print(f"{result['machine']['gpu']}: batch {', '.join(str(b) for b in BATCHES if b <= args.max_batch)}",
          flush=True)
    for batch in (b for b in BATCHES if b <= args.max_batch):
        result["cells"].append(cell(torch, batch, args))
        if torch is not None:
            torch.cuda.empty_cache()
        from minidiff.accel import backend
        backend.use_device("gpu").get_default_memory_pool().free_all_blocks()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "gpu.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
