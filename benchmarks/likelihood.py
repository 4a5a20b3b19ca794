"""The numbers of the README's `## Likelihood` section: the bound term by term, the probability-flow NLL and the
exact NLL, for the analytic oracle on every schedule and for a trained network of each target.

    python benchmarks/likelihood.py                      # both parts (the trained part takes ~20 min on one core)
    python benchmarks/likelihood.py --part oracle        # ~1 min
    python benchmarks/likelihood.py --part trained --steps 10000

Writes benchmarks/results/likelihood.json (each part updates its own key), likelihood.md (the tables the README
quotes) and two figures. The trained part trains with the CLI, exactly as a user would:
`python cli.py train --dataset gmm2d --target X --schedule cosine --T 1000 --steps N --out runs/likelihood-bench/X`.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minidiff import elbo, figures, make_schedule, run  # noqa: E402
from minidiff.data import get_mixture, sample_dataset  # noqa: E402
from minidiff.likelihood import flow_nll, network_model  # noqa: E402
from minidiff.mixture import oracle  # noqa: E402
from minidiff.schedules import PriorTermWarning  # noqa: E402
from minidiff.train import make_problem, model_fn  # noqa: E402

DATASET = "gmm2d"
SEED = 0
N_POINTS = 2000  # points of the oracle table; the trained table uses N_TRAINED (each network call costs more)
N_TRAINED = 1000
ODE_TOL = 1e-6  # rtol = atol of the probability-flow solves
VARIANCES = ("beta_tilde", "beta")
TARGETS = ("eps", "x0", "v", "score", "mu")
# (label, schedule name, T, zero terminal SNR, options): the list, plus linear at T = 50 with the endpoints
# of T = 1000 left unscaled (1e-4 → 0.02), the setting in which the post's "L_T is extremely small" fails
SCHEDULE_CASES = [
    ("linear, T=50", "linear", 50, False, {}),
    ("linear, T=50, β 1e-4→0.02 unscaled", "linear", 50, False, {"beta_start": 1e-4, "beta_end": 0.02}),
    ("linear, T=1000", "linear", 1000, False, {}),
    ("cosine, T=1000", "cosine", 1000, False, {}),
    ("sigmoid, T=1000", "sigmoid", 1000, False, {}),
    ("linear, T=1000, zero terminal SNR", "linear", 1000, True, {}),
]
ORACLE_TARGET = "v"  # defined at zero terminal SNR too; in exact arithmetic every target gives the same oracle


def generators():
    data_seed, noise_seed = np.random.SeedSequence(SEED).spawn(2)
    return np.random.default_rng(data_seed), noise_seed


def mean_se(values):
    values = np.asarray(values)
    return [float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))]


def bound_record(bound, exact):
    """The pieces of an elbo.Bound, and its paired gap to the exact per-point NLL."""
    return {"prior": bound.prior, "denoising": bound.denoising, "decoder": bound.decoder,
            "bound": mean_se(bound.per_example), "bits_per_dim": bound.bits_per_dim,
            "gap": mean_se(bound.per_example - exact)}


def flow_record(flow, exact, seconds):
    gap = flow.per_example - exact
    return {"nll": mean_se(flow.per_example), "bits_per_dim": flow.bits_per_dim, "gap": mean_se(gap),
            "median_gap": float(np.median(gap)), "worst_gap": float(gap.max()), "evaluations": flow.evaluations,
            "seconds": seconds}


def oracle_part(results_dir):
    """The bound of the exact optimal denoiser on every schedule: how small are L_0 and L_T?"""
    data_rng, noise_seed = generators()
    mixture = get_mixture(DATASET)
    x0 = mixture.sample(N_POINTS, data_rng)
    exact = -mixture.log_prob(x0)
    rows, figure_rows = [], []
    for label, name, T, zero, options in SCHEDULE_CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PriorTermWarning)
            schedule = make_schedule(name, T, zero_terminal_snr=zero, **options)
        model = oracle(mixture, schedule, ORACLE_TARGET)
        row = {"label": label, "alpha_bar_last": float(schedule.alpha_bar[-1])}
        for variance in VARIANCES:
            start = time.time()
            bound = elbo(model, schedule, x0, target=ORACLE_TARGET, rng=np.random.default_rng(noise_seed),
                         variance=variance)
            row[variance] = dict(bound_record(bound, exact), seconds=time.time() - start)
            if variance == "beta_tilde":
                figure_rows.append((label.replace(", ", "\n", 1), bound))
        start = time.time()
        flow = flow_nll(model, schedule, x0, target=ORACLE_TARGET, rtol=ODE_TOL, atol=ODE_TOL)
        row["flow"] = flow_record(flow, exact, time.time() - start)
        rows.append(row)
        print(f"{label}: bound {row['beta_tilde']['bound'][0]:.4f} (β̃), {row['beta']['bound'][0]:.4f} (β), "
              f"flow {row['flow']['nll'][0]:.4f}, exact {exact.mean():.4f}", flush=True)
    figures.save(figures.bound_breakdown_figure(figure_rows, exact=float(exact.mean()),
                                                title=f"{DATASET}, oracle, σ² = β̃: the bound term by term"),
                 os.path.join(results_dir, "likelihood_schedules.png"))
    return {"dataset": DATASET, "n": N_POINTS, "seed": SEED, "target": ORACLE_TARGET, "ode_tol": ODE_TOL,
            "exact_nll": mean_se(exact), "rows": rows}


def train(target, steps, runs_dir):
    """Train one target with the CLI (one BLAS thread: small matrices gain nothing from more); (folder, wall s).

    A finished run of the same length already in the folder is reused, with the wall time recorded beside it.
    """
    out = os.path.join(runs_dir, target)
    timing = os.path.join(out, "benchmark_wall_seconds.json")
    if os.path.exists(timing) and os.path.exists(os.path.join(out, "quality.json")):
        recorded = json.load(open(timing))
        if recorded["steps"] == steps:
            return out, recorded["seconds"]
    command = [sys.executable, os.path.join(ROOT, "cli.py"), "train", "--dataset", DATASET, "--target", target,
               "--schedule", "cosine", "--T", "1000", "--steps", str(steps), "--seed", str(SEED), "--out", out,
               "--force", "--quiet"]
    print(" ".join(command[1:]), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.time()
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    seconds = time.time() - start
    with open(timing, "w") as f:
        json.dump({"steps": steps, "seconds": seconds}, f)
    return out, seconds


def trained_part(results_dir, steps, runs_dir, skip_train):
    """Each target's trained network next to the oracle, on the same points and the same noise."""
    data_rng, noise_seed = generators()
    mixture = get_mixture(DATASET)
    x0 = sample_dataset(DATASET, N_TRAINED, data_rng)
    exact = -mixture.log_prob(x0)
    rows, terms = [], {}
    for target in TARGETS:
        out, seconds = (os.path.join(runs_dir, target), None) if skip_train else train(target, steps, runs_dir)
        config, _, stats, state = run.load_run(out)
        problem = make_problem(config)
        row = {"target": target, "steps": config.steps, "train_seconds": seconds,
               "quality": json.load(open(os.path.join(out, "quality.json")))}
        for label, model, ode_model in [("network", model_fn(state.ema, problem, config),
                                         network_model(state.ema, problem, config)),
                                        ("oracle", *(2 * [oracle(mixture, problem.schedule, target)]))]:
            row[label] = {}
            for variance in VARIANCES:
                bound = elbo(model, problem.schedule, x0, target=target, rng=np.random.default_rng(noise_seed),
                             variance=variance, stats=stats if label == "network" else None)
                row[label][variance] = bound_record(bound, exact)
                if variance == "beta_tilde" and label == "network":
                    terms[target] = bound
            start = time.time()
            flow = flow_nll(ode_model, problem.schedule, x0, target=target, rtol=ODE_TOL, atol=ODE_TOL,
                            stats=stats if label == "network" else None)
            row[label]["flow"] = flow_record(flow, exact, time.time() - start)
        print(f"{target}: network bound {row['network']['beta_tilde']['bound'][0]:.4f}, flow "
              f"{row['network']['flow']['nll'][0]:.4f}; exact {exact.mean():.4f}", flush=True)
        rows.append(row)
    figures.save(figures.elbo_terms_figure(terms, title=f"{DATASET}, cosine, T = 1000: trained networks, σ² = β̃"),
                 os.path.join(results_dir, "likelihood_trained_terms.png"))
    return {"dataset": DATASET, "n": N_TRAINED, "seed": SEED, "schedule": "cosine", "T": 1000, "steps": steps,
            "ode_tol": ODE_TOL, "exact_nll": mean_se(exact), "rows": rows}


def fmt(pair):
    """mean ± standard error with 4 decimals; 3 significant digits where a flow diverged (huge values)."""
    if not isinstance(pair, list):
        return f"{pair:.4g}"
    return f"{pair[0]:.3g} ± {pair[1]:.3g}" if abs(pair[0]) >= 1e4 else f"{pair[0]:.4f} ± {pair[1]:.4f}"


def markdown(results):
    """The tables the README quotes, from the JSON."""
    lines = []
    if "oracle" in results:
        o = results["oracle"]
        lines += [f"Oracle on {o['dataset']}, {o['n']} points (seed {o['seed']}); exact NLL {fmt(o['exact_nll'])} "
                  f"nats per example. Nats per example; gap = bound − exact NLL, paired on the same points.", ""]
        for variance in VARIANCES:
            lines += [f"σ_t² = {variance}:", "",
                      "| schedule | ᾱ_{T−1} | L_T | Σ L_t | L_0 | bound | gap | PF-ODE NLL − exact |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in o["rows"]:
                b = r[variance]
                lines.append(f"| {r['label']} | {r['alpha_bar_last']:.3g} | {b['prior']:.3g} | {b['denoising']:.4f} "
                             f"| {b['decoder']:.4f} | {fmt(b['bound'])} | {fmt(b['gap'])} | {fmt(r['flow']['gap'])} |")
            lines.append("")
    if "trained" in results:
        t = results["trained"]
        lines += [f"Trained networks on {t['dataset']} (cosine, T = {t['T']}, {t['steps']} steps, EMA weights), "
                  f"{t['n']} points; exact NLL {fmt(t['exact_nll'])} nats per example.", "",
                  "| target | train wall s | bound β̃ | bound β | PF-ODE NLL | PF-ODE gap: median, worst | "
                  "oracle bound β̃ | oracle bound β | oracle PF-ODE NLL | energy distance (floor) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in t["rows"]:
            n, o, q = r["network"], r["oracle"], r["quality"]
            wall = "—" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
            lines.append(f"| {r['target']} | {wall} | {fmt(n['beta_tilde']['bound'])} | {fmt(n['beta']['bound'])} "
                         f"| {fmt(n['flow']['nll'])} | {n['flow']['median_gap']:.3f}, {n['flow']['worst_gap']:.4g} "
                         f"| {fmt(o['beta_tilde']['bound'])} | {fmt(o['beta']['bound'])} "
                         f"| {fmt(o['flow']['nll'])} | {q['energy_distance']:.4f} ({q['energy_floor']:.4f}) |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["oracle", "trained", "all", "report"], default="all")
    parser.add_argument("--steps", type=int, default=10_000, help="training steps of each target")
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "likelihood-bench"), help="run folders")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the runs already in --runs")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args()
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, "likelihood.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    if args.part in ("oracle", "all"):
        results["oracle"] = oracle_part(args.results)
    if args.part in ("trained", "all"):
        os.makedirs(args.runs, exist_ok=True)
        results["trained"] = trained_part(args.results, args.steps, args.runs, args.skip_train)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.results, "likelihood.md"), "w") as f:
        f.write(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
