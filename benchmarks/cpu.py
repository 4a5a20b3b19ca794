"""The numbers of the README's `## Performance` section: minidiff's train step against PyTorch eager on the CPU, the
step against this machine's matrix-product limit, and end-to-end training and sampling times.

    python benchmarks/cpu.py              # everything (about 8 min on the project's 2-core machine, if quiet)
    python benchmarks/cpu.py --quick      # 4 batch sizes, fewer repeats, a 500-step training run (about 3 min)
    python benchmarks/cpu.py --threads 2  # BLAS and PyTorch threads for the train-step table (default 1)

Writes benchmarks/results/cpu.json (every number) and cpu.md (the tables the README quotes). PyTorch is optional:
without it the PyTorch columns are empty and the file says why. It is never a dependency of minidiff or its tests.

What is measured
- Train step: the work of one `train.train_step` minus clipping and EMA — `train.loss_and_grad` (forward and
  backward) and `optim.adam_update` — for the default denoiser (34-256-256-256-2 MLP, SiLU, residual) and problem
  (ε target, cosine schedule), batch 64 … 4096, fp32 and fp64. Against it: the same network, loss and Adam in
  PyTorch eager — nn.Linear layers, F.silu, `loss.backward()`, `torch.optim.Adam` with its defaults, and in a
  second column with fused=True. Both start from the same weights and batch, and their first losses must agree.
- Matrix products: the step's own products (4 forward, 7 backward), timed alone in NumPy and in PyTorch; the step's
  FLOPs over the NumPy time is this machine's limit for the step, and efficiency is the step's FLOP rate over it.
- End to end: `python cli.py train --dataset moons` with TrainConfig's defaults (its wall time and the quality it
  reports), and sampling 2,000 points through T ancestral (DDPM) steps and 100 DDIM steps.

How
- Threads: every measurement runs in a child process whose OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and
  MKL_NUM_THREADS are set before NumPy or PyTorch load, and which calls torch.set_num_threads with the same count:
  the same for both competitors. Sampling is also timed with every core (`--sampling-threads`).
- The competitors alternate in rounds within one process, so that a change in the machine's load falls on all of
  them; each time is a median over many steps. With one thread the primary time is CPU time, the time the step
  held a core: the machine is shared, and wall time also counts waiting for a core. With more threads it is wall
  time (CPU time would count threads spinning idle). Both are in the JSON.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
BATCHES = (64, 128, 256, 512, 1024, 2048, 4096)
QUICK_BATCHES = (64, 256, 1024, 4096)
DTYPES = ("float32", "float64")
SECONDS_PER_CELL = 2.0  # measuring time per competitor per (dtype, batch); --quick: a quarter
ROUNDS = 10  # the competitors alternate this many times per cell
LR = 1e-3
SAMPLE_POINTS = 2000  # the issue's sampling goal: 2,000 points through 1,000 ancestral steps in ≤ 5 s
DDIM_STEPS = 100
QUICK_DDPM_STEPS = 200  # --quick times fewer ancestral steps; the per-step time is the same
QUICK_TRAIN_STEPS = 500


# ---------------------------------------------------------------------------------------------------------------
# The child: measurements at one thread count (the environment is set by the parent before NumPy loads)

def measure(args):
    import numpy as np
    torch = _import_torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "torch": None if torch is None else torch.__version__}
    if "step" in args.sections:
        result["step"] = [step_cell(np, torch, dtype, batch, args.quick)
                          for dtype in DTYPES for batch in (QUICK_BATCHES if args.quick else BATCHES)]
    if "sample" in args.sections:
        result["sampling"] = sampling(np, args.quick)
    with open(args.json, "w") as f:
        json.dump(result, f)


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def default_problem(np, dtype, batch, seed=0):
    """The default TrainConfig's problem, params (output layer made nonzero) and one batch of moons."""
    from minidiff import data, nn
    from minidiff.train import TrainConfig, make_problem
    config = TrainConfig(dtype=dtype)
    problem, rng = make_problem(config), np.random.default_rng(seed)
    params = nn.init(rng, config.network(2), dtype=problem.dtype)
    # the init's zero output layer would leave the hidden layers' gradients zero at the first step
    params["out.W"] = (0.05 * rng.standard_normal(params["out.W"].shape)).astype(problem.dtype)
    x0 = data.sample_dataset(config.dataset, batch, rng).astype(problem.dtype)  # (B, 2)
    eps = rng.standard_normal(x0.shape).astype(problem.dtype)  # (B, 2)
    t = rng.integers(0, config.T, batch)  # (B,)
    return config, problem, params, (x0, eps, t)


def minidiff_step(params, problem, batch):
    """One step as `train_step` does it: loss and gradients, then Adam (params and moments carried over)."""
    from minidiff import optim
    from minidiff.train import loss_and_grad
    state = {"params": params, "adam": optim.adam_init(params)}

    def step():
        loss, grads, _ = loss_and_grad(state["params"], problem, *batch)
        state["params"], state["adam"] = optim.adam_update(state["params"], grads, state["adam"], LR)
        return float(loss)
    return step


def torch_step(torch, params, problem, batch, fused):
    """The same step in PyTorch eager: the same network, weights, batch, loss and Adam."""
    from minidiff import nn
    dtype = torch.float32 if problem.dtype == __import__("numpy").float32 else torch.float64
    model = TorchDenoiser(torch, params, nn.time_frequencies(params["in.W"].shape[0] - 2, problem.dtype))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, **({"fused": True} if fused else {}))
    assert model.omega.dtype == dtype
    return torch_loss_step(torch, model, optimizer, problem, batch)


def torch_loss_step(torch, model, optimizer, problem, batch, device="cpu"):
    """`train.per_example_loss` and Adam in PyTorch eager, with the batch and the loss's per-t tables on `device`."""
    x0, eps, t = (torch.from_numpy(a).to(device) for a in batch)
    table = {name: torch.from_numpy(getattr(problem, name)).to(device) for name in
             ("sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "a", "b", "weight", "time_input")}
    assert all(v.dtype == x0.dtype for v in table.values())  # both competitors compute in the same dtype

    def step():
        optimizer.zero_grad(set_to_none=True)
        col = lambda name: table[name][t][:, None]  # noqa: E731
        x_t = col("sqrt_alpha_bar") * x0 + col("sqrt_one_minus_alpha_bar") * eps
        target = col("a") * x0 + col("b") * eps
        losses = table["weight"][t] * ((model(x_t, table["time_input"][t]) - target) ** 2).sum(dim=1)
        loss = losses.mean()
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def TorchDenoiser(torch, params, omega):
    """nn.apply's network as a torch.nn.Module, with minidiff's weights (x W + b is torch's x Wᵀ + b)."""
    F = torch.nn.functional

    class Denoiser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.omega = torch.from_numpy(omega)
            self.layers = torch.nn.ModuleList()
            for prefix in ["in"] + [f"residual.{i}" for i in range(10) if f"residual.{i}.W" in params] + ["out"]:
                W, b = params[prefix + ".W"], params[prefix + ".b"]
                layer = torch.nn.Linear(*W.shape, dtype=self.omega.dtype)
                with torch.no_grad():
                    layer.weight.copy_(torch.from_numpy(W.T.copy()))
                    layer.bias.copy_(torch.from_numpy(b))
                self.layers.append(layer)

        def forward(self, x, time):
            angle = time[:, None] * self.omega  # (B, E/2)
            h = F.silu(self.layers[0](torch.cat([x, torch.sin(angle), torch.cos(angle)], dim=1)))
            for layer in self.layers[1:-1]:
                h = h + F.silu(layer(h))
            return self.layers[-1](h)

    return Denoiser()


def products(xp_dot, params, batch, make):
    """The step's matrix products as a function, on arrays from `make(shape)`; and their FLOPs.

    Forward x W for every layer; backward xᵀ z̄ for every layer and z̄ Wᵀ for every layer but the first (whose input
    needs no gradient): exactly the products of `loss_and_grad`.
    """
    shapes = [params[k].shape for k in params if k.endswith(".W")]
    inputs = [make((batch, n)) for n, _ in shapes]
    weights = [make(shape) for shape in shapes]
    grads = [make((batch, m)) for _, m in shapes]
    flops = sum(2 * batch * n * m * (2 if i == 0 else 3) for i, (n, m) in enumerate(shapes))

    def run():
        for x, W in zip(inputs, weights):
            xp_dot(x, W)
        for i, (x, W, g) in enumerate(zip(inputs, weights, grads)):
            xp_dot(x.T, g)
            if i:
                xp_dot(g, W.T)
    return run, flops


def race(competitors, seconds):
    """{name: {"cpu": median s, "wall": median s}}: the competitors alternate in ROUNDS rounds of several steps."""
    per_step = {}
    for name, f in competitors.items():
        f()
        start = time.perf_counter()
        f()
        per_step[name] = time.perf_counter() - start
    samples = {name: ([], []) for name in competitors}
    for _ in range(ROUNDS):
        for name, f in competitors.items():
            for _ in range(max(1, round(seconds / ROUNDS / per_step[name]))):
                cpu, wall = time.process_time(), time.perf_counter()
                f()
                samples[name][0].append(time.process_time() - cpu)
                samples[name][1].append(time.perf_counter() - wall)
    median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return {name: {"cpu": median(c), "wall": median(w), "n": len(c)} for name, (c, w) in samples.items()}


def step_cell(np, torch, dtype, batch, quick):
    """One row of the train-step table: step times, first losses, and the matrix products alone."""
    config, problem, params, data = default_problem(np, dtype, batch)
    steps = {"minidiff": minidiff_step(params, problem, data)}
    cell = {"dtype": dtype, "batch": batch}
    if torch is not None:
        steps["torch"] = torch_step(torch, params, problem, data, fused=False)
        try:
            steps["torch_fused"] = torch_step(torch, params, problem, data, fused=True)
        except (RuntimeError, TypeError) as err:  # fused Adam not built for this dtype or device
            cell["torch_fused_error"] = str(err)
        losses = {name: f() for name, f in steps.items()}  # the first step: the same loss from the same weights
        cell["first_loss"] = losses
        cell["loss_match"] = all(abs(v - losses["minidiff"]) <= 1e-4 * abs(losses["minidiff"]) for v in losses.values())
    rng = np.random.default_rng(1)
    make = lambda shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    gemm, flops = products(np.dot, params, batch, make)
    competitors = dict(steps, numpy_gemm=gemm)
    if torch is not None:
        torch_gemm, _ = products(torch.mm, params, batch, lambda shape: torch.from_numpy(make(shape)))
        competitors["torch_gemm"] = torch_gemm
    cell["times"] = race(competitors, SECONDS_PER_CELL / (4 if quick else 1))
    cell["flops"] = flops
    print(f"  {dtype} batch {batch}: " + ", ".join(f"{k} {v['cpu'] * 1e3:.2f} ms" for k, v in cell["times"].items()),
          flush=True)
    return cell


def sampling(np, quick):
    """Seconds to sample SAMPLE_POINTS points with DDPM (T steps) and DDIM (DDIM_STEPS), no gradient tracing."""
    from minidiff.sample import sample
    from minidiff.train import model_fn
    config, problem, params, _ = default_problem(np, "float32", 1)
    model = model_fn(params, problem, config)
    runs = []
    for sampler, steps in (("ddpm", QUICK_DDPM_STEPS if quick else config.T), ("ddim", DDIM_STEPS)):
        rng = np.random.default_rng(0)
        cpu, wall = time.process_time(), time.perf_counter()
        x = sample(model, problem.target, problem.schedule, (SAMPLE_POINTS, 2), rng, sampler=sampler, steps=steps)
        runs.append({"sampler": sampler, "points": SAMPLE_POINTS, "steps": steps, "cpu": time.process_time() - cpu,
                     "wall": time.perf_counter() - wall, "finite": bool(np.isfinite(x).all())})
        print(f"  {sampler}, {steps} steps: {runs[-1]['wall']:.2f} s", flush=True)
    return runs


# ---------------------------------------------------------------------------------------------------------------
# The parent: child processes per thread count, the end-to-end run, the result files

def child(threads, sections, quick):
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    command = [sys.executable, os.path.abspath(__file__), "--measure", "--threads", str(threads),
               "--sections", ",".join(sections), "--json", path] + (["--quick"] if quick else [])
    print(f"{threads} thread(s): {', '.join(sections)}", flush=True)
    subprocess.run(command, env=env, check=True)
    with open(path) as f:
        result = json.load(f)
    os.remove(path)
    return result


def end_to_end(threads, quick):
    """Wall time of `python cli.py train --dataset moons` (TrainConfig's defaults), and the quality it reports."""
    sys.path.insert(0, ROOT)
    from minidiff.train import TrainConfig
    defaults = TrainConfig()
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "cli.py", "train", "--dataset", "moons", "--out", os.path.join(out, "run"),
                   "--quiet"] + (["--steps", str(QUICK_TRAIN_STEPS)] if quick else [])
        print(" ".join(command[1:]), flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        quality = {}
        if os.path.exists(os.path.join(out, "run", "quality.json")):
            with open(os.path.join(out, "run", "quality.json")) as f:
                quality = json.load(f)
    shown = ["python", "cli.py", "train", "--dataset", "moons"] + (["--steps", str(QUICK_TRAIN_STEPS)] if quick else [])
    return {"command": " ".join(shown), "threads": threads,
            "returncode": done.returncode, "stderr_tail": done.stderr[-500:], "wall": wall,
            "steps": QUICK_TRAIN_STEPS if quick else defaults.steps, "batch_size": defaults.batch_size,
            "dtype": defaults.dtype, "quality": quality}


def machine(threads):
    import numpy as np
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "blas": f"{blas.get('name')} {blas.get('version')}", "threads": threads,
            "load_average": list(os.getloadavg())}


def markdown(result):
    """The tables of cpu.md, which the README's `## Performance` section quotes."""
    m, run = result["machine"], result["step_run"]
    threads = run["threads"]
    key = "cpu" if threads == 1 else "wall"
    lines = [f"# CPU performance{' (quick run)' if result['quick'] else ''}", "",
             f"Measured {result['date']} by `python benchmarks/cpu.py{' --quick' if result['quick'] else ''}` on "
             f"{m['cpu']} ({m['cores']} cores), Python {m['python']}, NumPy {m['numpy']} ({m['blas']}), "
             + (f"PyTorch {run['torch']}" if run["torch"] else "PyTorch not installed: its columns are empty")
             + f". Load average (1, 5, 15 min) {_load(m['load_average'])} before, "
             f"{_load(m['load_average_after'])} after.", "",
             f"## Train step: forward, backward and Adam, {threads} thread{'s' if threads > 1 else ''} for both",
             "", f"Median {'CPU' if key == 'cpu' else 'wall'} time per step in ms; ratio = minidiff / PyTorch "
             "(goal ≤ 0.8). PyTorch eager with `torch.optim.Adam` as it comes, and with `fused=True`. The last "
             "column is the ratio of wall times.", "",
             "| dtype | batch | minidiff | PyTorch | ratio | PyTorch, fused Adam | ratio | wall-time ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cell in run["step"]:
        t = cell["times"]
        ms = lambda name: f"{t[name][key] * 1e3:.2f}" if name in t else "–"  # noqa: E731
        ratio = lambda name, k=key: f"{t['minidiff'][k] / t[name][k]:.2f}" if name in t else "–"  # noqa: E731
        lines.append(f"| {cell['dtype']} | {cell['batch']} | {ms('minidiff')} | {ms('torch')} | **{ratio('torch')}** | "
                     f"{ms('torch_fused')} | {ratio('torch_fused')} | {ratio('torch', 'wall')} |")
    lines += ["", "## The step against the matrix-product limit", "",
              "The step's 11 matrix products timed alone give this machine's limit for it; efficiency = the step's "
              "FLOP rate / the NumPy limit (goal ≥ 70 % at batch 4096).", "",
              "| dtype | batch | GFLOP per step | NumPy products GFLOP/s | PyTorch products GFLOP/s | "
              "minidiff step GFLOP/s | efficiency |", "|---|---:|---:|---:|---:|---:|---:|"]
    for cell in run["step"]:
        t, flops = cell["times"], cell["flops"]
        rate = lambda name: f"{flops / t[name][key] / 1e9:.1f}" if name in t else "–"  # noqa: E731
        lines.append(f"| {cell['dtype']} | {cell['batch']} | {flops / 1e9:.3f} | {rate('numpy_gemm')} | "
                     f"{rate('torch_gemm')} | {rate('minidiff')} | "
                     f"{t['numpy_gemm'][key] / t['minidiff'][key]:.0%} |")
    lines += ["", "## Time outside the matrix products", "",
              "Each step's time minus its own library's products timed alone (the 11 products above), in ms; ratio = "
              "minidiff / PyTorch (goal ≤ 1 at every batch and dtype): the elementwise work, the Python and the "
              "memory traffic around the products.", "",
              "| dtype | batch | minidiff | PyTorch | ratio |", "|---|---:|---:|---:|---:|"]
    for cell in run["step"]:
        t = cell["times"]
        outside = lambda step, products: (t[step][key] - t[products][key]) * 1e3  # noqa: E731
        if "torch" in t:
            mine, theirs = outside("minidiff", "numpy_gemm"), outside("torch", "torch_gemm")
            lines.append(f"| {cell['dtype']} | {cell['batch']} | {mine:.2f} | {theirs:.2f} | **{mine / theirs:.2f}** |")
        else:
            lines.append(f"| {cell['dtype']} | {cell['batch']} | {outside('minidiff', 'numpy_gemm'):.2f} | – | – |")
    lines += ["", f"## Sampling {SAMPLE_POINTS} points (fp32, no gradient tracing)", "",
              "| threads | sampler | steps | wall s | CPU s | points × steps / s | 1,000 steps would take |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for group in result["sampling"]:
        for r in group["runs"]:
            lines.append(f"| {group['threads']} | {r['sampler']} | {r['steps']} | {r['wall']:.2f} | {r['cpu']:.2f} | "
                         f"{r['points'] * r['steps'] / r['wall']:,.0f} | {r['wall'] * 1000 / r['steps']:.1f} s |")
    if "end_to_end" in result:
        e = result["end_to_end"]
        q = e["quality"]
        quality = (f"energy distance {q['energy_distance']:.5f} (data-vs-data floor {q['energy_floor']:.5f} ± "
                   f"{q['energy_floor_stderr']:.5f})" if q else f"no quality.json (exit code {e['returncode']})")
        lines += ["", "## End to end", "",
                  f"`{e['command']}` ({e['steps']} steps of batch {e['batch_size']}, {e['dtype']}, then 2,000 "
                  f"samples and their quality; {e['threads']} thread{'s' if e['threads'] > 1 else ''}): "
                  f"**{e['wall']:.0f} s** wall, {quality}."]
    return "\n".join(lines) + "\n"


def _load(values):
    return ", ".join(f"{v:.1f}" for v in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 batch sizes, fewer repeats, short training run")
    parser.add_argument("--threads", type=int, default=1, help="threads of both competitors (default 1)")
    parser.add_argument("--sampling-threads", default=f"1,{os.cpu_count()}",
                        help="thread counts to time sampling with (default: 1 and every core)")
    parser.add_argument("--skip-train", action="store_true", help="leave out the end-to-end training run")
    parser.add_argument("--out", default=RESULTS, help="folder for cpu.json and cpu.md")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sections", default="step,sample", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        args.sections = args.sections.split(",")
        sys.path.insert(0, ROOT)
        return measure(args)

    result = {"quick": args.quick, "machine": machine(args.threads), "date": time.strftime("%Y-%m-%d %H:%M")}
    result["step_run"] = child(args.threads, ["step"], args.quick)
    result["sampling"] = []
    for threads in sorted({int(n) for n in args.sampling_threads.split(",")}):
        result["sampling"].append({"threads": threads, "runs": child(threads, ["sample"], args.quick)["sampling"]})
    if not args.skip_train:
        result["end_to_end"] = end_to_end(args.threads, args.quick)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cpu.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "cpu.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
