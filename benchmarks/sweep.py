"""The numbers of docs/performance.md's "Many runs at once": the stacked sweep engine against the process pool, the
stacked trainer against single runs and against a PyTorch `torch.func` ensemble, and a stack of one.

    python benchmarks/sweep.py            # everything (about 7 min on the project's 2-core machine, if quiet)
    python benchmarks/sweep.py --quick    # 10 cells, 300 steps: to check that it runs
    python benchmarks/sweep.py --sections training,one   # some of: sweep, training, cell, one

Writes benchmarks/results/sweep.json (every number) and sweep.md (the tables). PyTorch is optional, as in cpu.py:
without it its column is empty. It is never a dependency of minidiff or its tests.

What is measured (the study's sweep cell: moons, T = 1000, the 64-wide MLP with 2 hidden layers, batch 128, fp32)
- sweep: `run_sweep` of 150 cells (5 targets × 6 learning rates × 5 seeds, 2000 steps, `minidiff sweep`'s checks:
  every 250 steps, 500 samples of 100 DDPM steps, and the ELBO at the end) with the stacked engine, against the
  process engine on the 30 cells of seed 0 (cells per second extrapolated; the cells of every seed cost alike). Both
  with 2 worker processes. Wall time and CPU time (all processes) per cell; both engines give the same rows
  (tests/test_diagnostics_sweep.py), checked here again on the cells both ran.
- training: the training step alone, all 150 runs: minidiff's stacked step (`stacked.train_step`), the single step
  (`train.train_step`) for each run in turn, and the same runs as a `torch.func` ensemble — `stack_module_state`,
  `vmap(functional_call)`, one backward, and Adam, clipping and EMA over the stacked tensors with one learning rate
  per run — the PyTorch way to train many small models. Each competitor does the same work: per-run tables of
  √ᾱ_t, √(1 − ᾱ_t), a_t, b_t, w(t), its draws (minidiff from each run's own generator, PyTorch from its own
  generator, all runs at once), the loss, the gradient, its norm per run, clipping, Adam and the EMA. One thread.
- cell: what one cell costs, CPU seconds: its training steps, its checks and its bound, alone (as the process engine
  runs a cell) and as one of the 75 cells of a worker's stack (as the stacked engine does with 2 workers); and the
  training step's matrix products alone, as batched products of 75 runs. From these, the most any stacking could
  gain: with the checks free, and with the step reduced to its products.
- one: a stack of one against the single run: the step (`stacked.train_step` against `train.train_step`) and the
  whole loop (`runs.stack.train_stack` against `runs.loop.train`, with their logs and checkpoints), for the sweep
  cell and for TrainConfig's default network (34-256-256-256-2, batch 256).

CPU time is the primary measure where the machine is shared (wall time counts waiting for a core); the load average
and the processor are printed beside every number.
"""
import argparse
import copy
import json
import os
import platform
import resource
import sys
import tempfile
import time

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _name in THREAD_VARIABLES:  # one BLAS thread in this process, set before NumPy loads (the pools' workers: theirs)
    os.environ[_name] = "1"

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "benchmarks", "results")

TARGETS = ("eps", "x0", "v", "score", "mu")
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1)
SEEDS = (0, 1, 2, 3, 4)
CELL = dict(dataset="moons", T=1000, batch_size=128, hidden=64, depth=2)  # the study's sweep cell
STEPS = 2000
CHECKS = dict(check_every=250, quality_n=500, quality_steps=100)  # `minidiff sweep`'s defaults
WORKERS = 2
TRAINING_STEPS = 200  # steps of each competitor in the training comparison (after WARMUP)
WARMUP = 5
ROUNDS = 5  # the step comparisons alternate their competitors this many times


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "load_average": list(os.getloadavg())}


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def _cpu_all():
    """CPU seconds of this process and of its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- sweep: the engines -----------------------------------------------------------------------------------------

def sweep_settings(seeds, steps):
    from minidiff.lab.diagnostics.sweep import SweepConfig
    base = dict(CELL, steps=steps, log_every=CHECKS["check_every"], checkpoint_every=CHECKS["check_every"])
    return SweepConfig(lrs=LRS, targets=TARGETS, seeds=seeds, base=base, **CHECKS)


def engine_run(engine, seeds, steps):
    from minidiff.lab.diagnostics.sweep import run_sweep
    settings = sweep_settings(seeds, steps)
    with tempfile.TemporaryDirectory() as out:
        load, cpu, wall = os.getloadavg(), _cpu_all(), time.perf_counter()
        rows = run_sweep(settings, out, workers=WORKERS, engine=engine)
        wall, cpu = time.perf_counter() - wall, _cpu_all() - cpu
    cells = len(rows)
    print(f"  {engine}: {cells} cells in {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    keep = ("index", "status", "final_loss", "energy_distance", "elbo_nats")
    return {"engine": engine, "cells": cells, "steps": steps, "wall": wall, "cpu": cpu, "load_before": list(load),
            "load_after": list(os.getloadavg()), "rows": [{k: r.get(k) for k in keep} for r in rows]}


def sweep_section(quick):
    seeds, steps = ((0,), 300) if quick else (SEEDS, STEPS)
    stacked = engine_run("stacked", seeds, steps)
    pool = engine_run("processes", seeds[:1], steps)  # seed 0's cells: every target and learning rate
    # the grid puts the seed innermost: cell j of the seed-0 grid is cell j · len(seeds) of the whole one
    whole = {r["index"]: r for r in stacked["rows"]}
    agree = all(dict(whole[r["index"] * len(seeds)], index=0) == dict(r, index=0) for r in pool["rows"])
    return {"stacked": stacked, "processes": pool, "rows_agree": agree}


# --- training: the step alone -----------------------------------------------------------------------------------

def runs(n_seeds):
    from minidiff.runs import loop
    from minidiff.train import TrainConfig, make_problem
    configs = [TrainConfig(**CELL, steps=STEPS, lr=lr, target=target, seed=seed)
               for lr in LRS for target in TARGETS for seed in range(n_seeds)]
    problems, xs, states = [], [], []
    for config in configs:
        data_rng, init_rng, train_rng, _ = loop.generators(config.seed)
        problems.append(make_problem(config))
        xs.append(loop.load_training_data(config, data_rng)[0].astype(problems[-1].dtype))
        states.append(loop.initial_state(config, 2, init_rng, train_rng))
    return configs, problems, xs, states


def minidiff_stacked(configs, problems, xs, states):
    from minidiff import stacked
    box = {"s": stacked.stack_states(states)}
    problem, medians = stacked.stack_problems(problems), [None] * len(configs)

    def step():
        box["s"] = stacked.train_step(box["s"], problem, problems, configs, xs, medians)[0]
    return step


def minidiff_single(configs, problems, xs, states):
    from minidiff.train import train_step
    box = list(states)

    def step():
        for r, config in enumerate(configs):
            box[r] = train_step(box[r], problems[r], config, xs[r], None)[0]
    return step


def torch_ensemble(torch, configs, problems, xs, states):
    """The runs as a torch.func ensemble: one vmapped forward and backward, Adam, clipping and EMA per run."""
    from torch.func import functional_call, stack_module_state, vmap
    from minidiff import nn, optim
    from cpu import TorchDenoiser
    R, B = len(configs), configs[0].batch_size
    omega = nn.time_frequencies(states[0].params["in.W"].shape[0] - 2, np.float32)
    first = TorchDenoiser(torch, states[0].params, omega)
    models = [copy.deepcopy(first) for _ in states]  # one class (stack_module_state asks), each run's weights
    for model, state in zip(models, states):
        prefixes = ["in"] + [f"residual.{i}" for i in range(10) if f"residual.{i}.W" in state.params] + ["out"]
        with torch.no_grad():
            for layer, prefix in zip(model.layers, prefixes):
                layer.weight.copy_(torch.from_numpy(state.params[prefix + ".W"].T.copy()))
                layer.bias.copy_(torch.from_numpy(state.params[prefix + ".b"]))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    names = ("sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "a", "b", "weight", "time_input")
    tables = {n: torch.from_numpy(np.stack([getattr(p, n) for p in problems])) for n in names}  # (R, T)
    data = torch.from_numpy(np.stack(xs))  # (R, N, D)
    lr = torch.tensor([c.lr for c in configs], dtype=torch.float32)
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    ema = {k: v.detach().clone() for k, v in params.items()}
    generator, count = torch.Generator().manual_seed(0), {"t": 0}
    T, N = tables["a"].shape[1], data.shape[1]

    def one(p, b, x_t, time):
        return functional_call(base, (p, b), (x_t, time))

    def step():
        count["t"] += 1
        idx = torch.randint(0, N, (R, B), generator=generator)
        t = torch.randint(0, T, (R, B), generator=generator)
        x0 = torch.gather(data, 1, idx[..., None].expand(R, B, data.shape[2]))
        eps = torch.randn(x0.shape, generator=generator)
        col = {n: torch.gather(tables[n], 1, t) for n in names}
        x_t = col["sqrt_alpha_bar"][..., None] * x0 + col["sqrt_one_minus_alpha_bar"][..., None] * eps
        target = col["a"][..., None] * x0 + col["b"][..., None] * eps
        pred = vmap(one)(params, buffers, x_t, col["time_input"])
        loss = (col["weight"] * ((pred - target) ** 2).sum(-1)).mean(1)  # (R,)
        for g in params.values():
            g.grad = None
        loss.sum().backward()
        with torch.no_grad():
            norm = torch.sqrt(sum((p.grad.reshape(R, -1) ** 2).sum(1) for p in params.values()))
            scale = torch.clamp(1.0 / norm, max=1.0)  # grad_clip 1 (Pascanu et al. 2013)
            c1, c2 = 1 - optim.ADAM_BETA1 ** count["t"], 1 - optim.ADAM_BETA2 ** count["t"]
            for k, p in params.items():
                shape = (R,) + (1,) * (p.dim() - 1)
                g = p.grad * scale.view(shape)
                m[k].mul_(optim.ADAM_BETA1).add_(g, alpha=1 - optim.ADAM_BETA1)
                v2[k].mul_(optim.ADAM_BETA2).addcmul_(g, g, value=1 - optim.ADAM_BETA2)
                p.sub_((lr / c1).view(shape) * m[k] / ((v2[k] / c2).sqrt() + optim.ADAM_EPS))
                ema[k].lerp_(p, 1 - 0.999)
        return float(loss.detach().sum())
    return step


def race(competitors, rounds=ROUNDS, steps=TRAINING_STEPS):
    """{name: median CPU seconds per step}: the competitors alternate in rounds of steps/rounds steps each."""
    for f in competitors.values():
        for _ in range(WARMUP):
            f()
    samples = {name: [] for name in competitors}
    for _ in range(rounds):
        for name, f in competitors.items():
            cpu = time.process_time()
            for _ in range(max(1, steps // rounds)):
                f()
            samples[name].append((time.process_time() - cpu) / max(1, steps // rounds))
    return {name: float(np.median(v)) for name, v in samples.items()}


def training_section(quick):
    torch = _torch()
    n_seeds = 1 if quick else len(SEEDS)
    competitors = {}
    for name, make in (("minidiff_stacked", minidiff_stacked), ("minidiff_single", minidiff_single)):
        competitors[name] = make(*runs(n_seeds))
    if torch is not None:
        competitors["torch_func"] = torch_ensemble(torch, *runs(n_seeds))
    load = os.getloadavg()
    times = race(competitors, steps=20 if quick else TRAINING_STEPS)
    R = n_seeds * len(LRS) * len(TARGETS)
    print("  " + ", ".join(f"{k} {v * 1e3:.1f} ms per step of {R} runs" for k, v in times.items()), flush=True)
    return {"runs": R, "per_step": times, "load_before": list(load), "load_after": list(os.getloadavg()),
            "torch": None if torch is None else torch.__version__}


# --- cell: what a cell costs, piece by piece -----------------------------------------------------------------------

def _cpu_of(f, repeat=1):
    cpu = time.process_time()
    for _ in range(repeat):
        f()
    return (time.process_time() - cpu) / repeat


def products(params_shapes, R, B, dtype):
    """CPU seconds of the training step's matrix products alone for R runs at batch B: per layer x W forward, and
    x̄ = z̄ Wᵀ (not for the first layer) and W̄ = xᵀ z̄ backward, as (R, ·, ·) batched products."""
    rng, work = np.random.default_rng(0), []
    for i, (n, m) in enumerate(params_shapes):
        x, W, g = (rng.standard_normal(shape).astype(dtype) for shape in ((R, B, n), (R, n, m), (R, B, m)))
        work += [(x, W), (x.transpose(0, 2, 1), g)] + ([(g, W.transpose(0, 2, 1))] if i else [])
    return lambda: [a @ b for a, b in work]


def cell_section(quick):
    """One cell's CPU cost: its training steps, its checks and its bound, alone (as the process engine runs a cell;
    its checks a stack of one) and as one of the R cells of a worker's stack (the stacked engine with WORKERS
    workers); and the training step's matrix products alone."""
    from minidiff.lab.diagnostics.checks import Checks, bounds_together, check_together
    R = 10 if quick else len(TARGETS) * len(LRS) * len(SEEDS) // WORKERS
    configs, problems, xs, states = runs(len(SEEDS))
    configs, problems, xs, states = configs[:R], problems[:R], xs[:R], states[:R]
    settings = sweep_settings(SEEDS, STEPS)
    n_checks = STEPS // CHECKS["check_every"] + 1
    picks = range(0, R, max(R // (2 if quick else 8), 1))  # cells timed one by one, spread over the grid
    alone = [configs[i] for i in picks]
    training = race({"stacked": minidiff_stacked(configs, problems, xs, states),
                     "single": minidiff_single(alone, [problems[i] for i in picks], [xs[i] for i in picks],
                                               [states[i] for i in picks])}, steps=10 if quick else 100)
    load = os.getloadavg()
    pairs = [(configs[i], states[i]) for i in picks]
    checks_alone = np.median([_cpu_of(lambda: check_together([Checks(c, settings)], [s])) -
                              _cpu_of(lambda: Checks(c, settings)) for c, s in pairs])
    bound_alone = np.median([_cpu_of(lambda: bounds_together([Checks(c, settings)], [s.ema])) -
                             _cpu_of(lambda: Checks(c, settings)) for c, s in pairs])
    made = [Checks(c, settings) for c in configs]
    checks_stacked = _cpu_of(lambda: check_together(made, states)) / R
    bound_stacked = _cpu_of(lambda: bounds_together(made, [s.ema for s in states])) / R
    names = [k for k in states[0].params if k.endswith(".W")]
    shapes = [states[0].params[k].shape for k in names]
    product = _cpu_of(products(shapes, R, CELL["batch_size"], np.float32), repeat=20) / R
    result = {"runs": R, "steps": STEPS, "checks": n_checks, "load_before": list(load),
              "load_after": list(os.getloadavg()),
              "alone": {"training": training["single"] / len(alone) * STEPS, "checks": checks_alone * n_checks,
                        "bound": bound_alone},
              "stacked": {"training": training["stacked"] / R * STEPS, "checks": checks_stacked * n_checks,
                          "bound": bound_stacked},
              "products": product * STEPS}
    print("  per cell, CPU s: " + "; ".join(f"{k}: " + ", ".join(f"{n} {v:.3f}" for n, v in result[k].items())
                                            for k in ("alone", "stacked")) + f"; products {result['products']:.3f}",
          flush=True)
    return result


# --- one: a stack of one ----------------------------------------------------------------------------------------

def one_section(quick):
    from minidiff import stacked
    from minidiff.runs import loop, stack
    from minidiff.train import TrainConfig, make_problem, train_step
    results = []
    for label, options in (("sweep cell", dict(CELL)), ("default network", dict(dataset="moons"))):
        config = TrainConfig(**options, steps=200 if quick else 1000, log_every=100, checkpoint_every=500)
        data_rng, init_rng, train_rng, _ = loop.generators(0)
        problem = make_problem(config)
        x = loop.load_training_data(config, data_rng)[0].astype(problem.dtype)
        single = {"s": loop.initial_state(config, 2, init_rng, train_rng)}
        one = {"s": stacked.stack_states([loop.initial_state(config, 2, *loop.generators(0)[1:3])])}
        tables = stacked.stack_problems([problem])

        def single_step():
            single["s"] = train_step(single["s"], problem, config, x, None)[0]

        def stacked_step():
            one["s"] = stacked.train_step(one["s"], tables, [problem], [config], [x], [None])[0]
        step = race({"single": single_step, "stack_of_one": stacked_step}, steps=100 if quick else 500)
        loops = {"single": [], "stack_of_one": []}
        for _ in range(3):
            for name in loops:
                with tempfile.TemporaryDirectory() as out:
                    cpu = time.process_time()
                    if name == "single":
                        loop.train(config, out, evaluate=False)
                    else:
                        stack.train_stack([config], [out])
                    loops[name].append((time.process_time() - cpu) / config.steps)
        whole = {k: float(np.median(v)) for k, v in loops.items()}
        print(f"  {label}: step {step['single'] * 1e3:.3f} / {step['stack_of_one'] * 1e3:.3f} ms, loop "
              f"{whole['single'] * 1e3:.3f} / {whole['stack_of_one'] * 1e3:.3f} ms per step", flush=True)
        results.append({"label": label, "config": {k: getattr(config, k) for k in ("hidden", "depth", "batch_size",
                                                                                  "dtype", "steps")},
                        "step": step, "loop": whole, "load_after": list(os.getloadavg())})
    return results


# --- the report -------------------------------------------------------------------------------------------------

def markdown(result):
    m = result["machine"]
    lines = [f"# Many runs at once{' (quick run)' if result['quick'] else ''}", "",
             f"Measured {result['date']} by `python benchmarks/sweep.py{' --quick' if result['quick'] else ''}` on "
             f"{m['cpu']} ({m['cores']} cores), Python {m['python']}, NumPy {m['numpy']}. Load average (1, 5, 15 min) "
             f"{_load(m['load_average'])} before, {_load(m['load_average_after'])} after. CPU times are of every "
             f"process of the measurement; the machine is shared, so wall times also count waiting for a core.", ""]
    if "sweep" in result:
        s = result["sweep"]
        st, pool = s["stacked"], s["processes"]
        rate = lambda r, k: r["cells"] / r[k]  # noqa: E731
        lines += ["## A sweep: the stacked engine against the process pool", "",
                  f"`run_sweep` with {WORKERS} worker processes: the stacked engine on {st['cells']} cells "
                  f"({len(TARGETS)} targets × {len(LRS)} learning rates × {st['cells'] // (len(TARGETS) * len(LRS))} "
                  f"seeds, {st['steps']} steps, checks every {CHECKS['check_every']} steps and the ELBO at the end), "
                  f"the process pool on the {pool['cells']} cells of seed 0 (extrapolated as cells per second). "
                  f"Rows of the cells both ran agree: **{s['rows_agree']}**.", "",
                  "| engine | cells | wall s | CPU s | cells / s (wall) | cells / CPU s | ratio (wall) | ratio (CPU) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (pool, st):
            lines.append(f"| {r['engine']} | {r['cells']} | {r['wall']:.0f} | {r['cpu']:.0f} | {rate(r, 'wall'):.3f} | "
                         f"{rate(r, 'cpu'):.3f} | **{rate(r, 'wall') / rate(pool, 'wall'):.2f}** | "
                         f"**{rate(r, 'cpu') / rate(pool, 'cpu'):.2f}** |")
        lines += ["", f"Load average before / after: stacked {_load(st['load_before'])} / {_load(st['load_after'])}, "
                      f"processes {_load(pool['load_before'])} / {_load(pool['load_after'])}."]
    if "training" in result:
        t = result["training"]
        p = t["per_step"]
        lines += ["", f"## Training alone: {t['runs']} runs, one thread", "",
                  "Median CPU time of one step of every run; ratio = that competitor / minidiff stacked. "
                  + (f"PyTorch {t['torch']}." if t["torch"] else "PyTorch not installed."), "",
                  "| competitor | ms per step of all runs | ms per run-step | ratio |", "|---|---:|---:|---:|"]
        for name, label in (("minidiff_stacked", "minidiff, stacked (`stacked.train_step`)"),
                            ("minidiff_single", "minidiff, one run after another (`train.train_step`)"),
                            ("torch_func", "PyTorch `torch.func` ensemble (vmap)")):
            if name in p:
                lines.append(f"| {label} | {p[name] * 1e3:.1f} | {p[name] / t['runs'] * 1e3:.3f} | "
                             f"{p[name] / p['minidiff_stacked']:.2f} |")
        lines += ["", f"Load average before / after: {_load(t['load_before'])} / {_load(t['load_after'])}."]
    if "cell" in result:
        c = result["cell"]
        a, st = c["alone"], c["stacked"]
        total = lambda part: sum(part.values())  # noqa: E731
        lines += ["", "## What a cell costs", "",
                  f"CPU seconds per cell, one thread: its {c['steps']} training steps, its {c['checks']} checks and "
                  f"its bound, alone (the process engine; its checks a stack of one) and as one of the {c['runs']} "
                  f"cells of a worker's stack (the stacked engine, {WORKERS} workers).", "",
                  "| part | alone | in a stack | ratio |", "|---|---:|---:|---:|"]
        for name, label in (("training", f"training, {c['steps']} steps"), ("checks", f"{c['checks']} checks"),
                            ("bound", "the bound, every term")):
            lines.append(f"| {label} | {a[name]:.3f} | {st[name]:.3f} | {a[name] / st[name]:.2f} |")
        lines += [f"| **all** | **{total(a):.3f}** | **{total(st):.3f}** | **{total(a) / total(st):.2f}** |", "",
                  f"The most stacking could gain over the process pool, from these parts: with the checks and the "
                  f"bound free, {total(a) / st['training']:.1f} ×; with the training step reduced to its matrix "
                  f"products alone ({c['products']:.3f} s per cell at {c['runs']} runs, fp32) as well, "
                  f"{total(a) / c['products']:.1f} ×."]
        if "sweep" in result:
            pool = result["sweep"]["processes"]
            per_cell = pool["cpu"] / pool["cells"]
            lines += ["", f"The process pool's whole cell (its files, logs and snapshots too) cost {per_cell:.3f} CPU s "
                          f"in the sweep above: 20 × that rate asks for {per_cell / 20:.3f} s per stacked cell, against "
                          f"{c['products']:.3f} s for the training step's matrix products alone."]
        lines += ["", f"Load average before / after: {_load(c['load_before'])} / {_load(c['load_after'])}."]
    if "one" in result:
        lines += ["", "## A stack of one against the single run, one thread", "",
                  "Median CPU time per step in ms: the step alone, and the whole loop (logs and checkpoints "
                  "included); ratio = stack of one / single run (goal 1 ± 0.05).", "",
                  "| network | batch | dtype | step: single | stack of one | ratio | loop: single | stack of one | ratio |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in result["one"]:
            c, s, w = r["config"], r["step"], r["loop"]
            lines.append(f"| {r['label']} ({c['hidden']} wide, {c['depth']} hidden) | {c['batch_size']} | {c['dtype']} | "
                         f"{s['single'] * 1e3:.3f} | {s['stack_of_one'] * 1e3:.3f} | "
                         f"**{s['stack_of_one'] / s['single']:.3f}** | {w['single'] * 1e3:.3f} | "
                         f"{w['stack_of_one'] * 1e3:.3f} | **{w['stack_of_one'] / w['single']:.3f}** |")
    return "\n".join(lines) + "\n"


def _load(values):
    return ", ".join(f"{v:.1f}" for v in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small sweep and few steps: to check that it runs")
    parser.add_argument("--sections", default="sweep,training,cell,one", help="some of: sweep, training, cell, one")
    parser.add_argument("--out", default=RESULTS, help="folder for sweep.json and sweep.md")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # cpu.py's TorchDenoiser
    result = {"quick": args.quick, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    sections = {"sweep": sweep_section, "training": training_section, "cell": cell_section, "one": one_section}
    unknown = [name for name in args.sections.split(",") if name not in sections]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(sections)}")
    for name in args.sections.split(","):
        print(f"{name}:", flush=True)
        result[name] = sections[name](args.quick)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    os.makedirs(args.out, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    with open(os.path.join(args.out, f"sweep{suffix}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, f"sweep{suffix}.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
