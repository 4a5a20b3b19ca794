"""What `minidiff gradvar`, `landscape` and `sweep` write and print, from the results of applied.py and sweep.py;
and the tables of `minidiff schedules` and `minidiff datasets`.

A study's data go to OUT (.json, every number), its table to the CSV beside it (OUT with .csv), its main figure
to PLOT and the others beside that (PLOT_cosine.png, PLOT_targets.png, …); a sweep's go to its folder. Each
`write_*` returns the paths it wrote, in order, and each `*_table` the lines the command prints.
"""
import math
import os

from minidiff import data, schedules
from minidiff.lab import figures
from minidiff.lab.diagnostics.applied import GRADVAR_COLUMNS, gradvar_rows, save_csv, save_json

LANDSCAPE_COLUMNS = ("run", "target", "schedule", "weighting", "loss", "curvature_d", "curvature_e",
                     "relative_curvature_d", "relative_curvature_e", "cos_de", "pca_ratio_1", "pca_ratio_2")
PCA_SHOWN = 2  # the first two PCA ratios of a path: the plane its loss is drawn on
RUN_NAME_WIDTH = 35  # characters of a run's folder name in the landscape table
SWEEP_FILES = ("sweep.csv", "sweep.json", "sweep.png")  # the data of `sweep.run_sweep`, then its figure


def csv_path(out):
    """The CSV table beside the data file OUT."""
    return os.path.splitext(out)[0] + ".csv"


def beside(plot, suffix):
    """PLOT_SUFFIX.ext: another figure beside the main one."""
    stem, ext = os.path.splitext(plot)
    return f"{stem}_{suffix}{ext}"


# --- gradient noise ----------------------------------------------------------------------------------------------

def write_gradvar(records, out, plot, settings, targets=None):
    """The records of `applied.gradvar_*` (and the `applied.target_study` of the same configurations) as data,
    table and figures; `settings` are saved with them."""
    save_json(out, dict(settings=settings, records=records, **({} if targets is None else {"targets": targets})))
    save_csv(csv_path(out), gradvar_rows(records), GRADVAR_COLUMNS)
    return [out, csv_path(out), *_gradvar_figures(records, targets, plot)]


def _gradvar_figures(records, targets, plot):
    """The noise per bucket (at the checkpoints, when the records also hold snapshots), the cosines between buckets
    of the first configuration, the scale of each target, and the noise along the snapshots."""
    measured = [r for r in records if "all" in r]
    last = [r for r in measured if r["weights"] != "raw" or len({m["weights"] for m in measured}) == 1] or measured
    figures.save(figures.gradvar_figure(last), plot)
    written = [plot]
    if len(measured) > 1:
        written.append(beside(plot, "cosine"))
        first = [r for r in last if r["schedule"] == measured[0]["schedule"]
                 and r["weighting"] == measured[0]["weighting"]]
        figures.save(figures.bucket_cosine_figure(first), written[-1])
    if targets is not None:
        written.append(beside(plot, "targets"))
        figures.save(figures.target_scale_figure(targets["scales"], targets["floors"]), written[-1])
    if any(r["weights"] == "raw" for r in measured):
        written.append(beside(plot, "along"))
        figures.save(figures.gradvar_along_figure(measured), written[-1])
    if any("uncertainty" in r for r in last):
        written.append(beside(plot, "uncertainty"))
        figures.save(figures.uncertainty_figure([r for r in last if "uncertainty" in r]), written[-1])
    return written


def gradvar_table(records):
    """tr Σ, |G|² and B_simple of the whole loss, a line per record (a skipped one says why)."""
    lines = [f"{'target':<7}{'schedule':<10}{'weighting':<11}{'step':>7} {'weights':<8}{'tr Σ':>11}{'|G|²':>11}"
             f"{'B_simple':>10}"]
    for r in records:
        head = f"{r['target']:<7}{r['schedule']:<10}{r['weighting']:<11}"
        if "skipped" in r:
            lines.append(f"{head}  skipped: {r['skipped']}")
            continue
        a = r["all"]
        lines.append(f"{head}{r['step']:>7} {r['weights']:<8}{a['trace_cov']:>11.4g}{a['grad_sq']:>11.4g}"
                     f"{a['b_simple']:>10.4g}")
    return lines


# --- loss landscapes ----------------------------------------------------------------------------------------------

def landscape_rows(results):
    """The CSV rows: each result of `applied.landscape_of_run`, with its first PCA ratios as columns."""
    return [dict(r, **({f"pca_ratio_{k + 1}": r["pca"]["ratios"][k] for k in range(PCA_SHOWN)} if "pca" in r else {}))
            for r in results]


def write_landscape(results, line, out, plot):
    """The landscapes of the runs and the interpolation `line` between two of them (or None) as data, table and
    figures: the slices, the interpolation, the trajectories' PCA."""
    save_json(out, dict(runs=results, interpolation=line))
    save_csv(csv_path(out), landscape_rows(results), LANDSCAPE_COLUMNS)
    figures.save(figures.landscape_figure(results), plot)
    written = [out, csv_path(out), plot]
    if line is not None:
        written.append(beside(plot, "interpolation"))
        figures.save(figures.interpolation_figure(line), written[-1])
    if any("pca" in r for r in results):
        written.append(beside(plot, "trajectory"))
        figures.save(figures.trajectory_figure(results), written[-1])
    return written


def landscape_table(results):
    """Loss, sharpness f″(0) along d (absolute and relative) and the PCA ratios beside the random walk's, a line
    per run."""
    lines = [f"{'run':<36}{'target':<7}{'loss':>10}{'f″(0)':>11}{'f″(0)/f(0)':>12}{'PCA 1, 2':>12}{'random walk':>13}"]
    for row in landscape_rows(results):
        pca = f"{row['pca_ratio_1']:.2f}, {row['pca_ratio_2']:.2f}" if "pca" in row else "-"
        walk = "{:.2f}, {:.2f}".format(*row["pca"]["random_walk"][:PCA_SHOWN]) if "pca" in row else "-"
        name = os.path.basename(os.path.normpath(row["run"]))[:RUN_NAME_WIDTH]
        lines.append(f"{name:<{RUN_NAME_WIDTH + 1}}{row['target']:<7}{row['loss']:>10.4g}{row['curvature_d']:>11.4g}"
                     f"{row['relative_curvature_d']:>12.4g}{pca:>12}{walk:>13}")
    return lines


# --- stability sweeps ---------------------------------------------------------------------------------------------

def write_sweep(rows, out_dir):
    """The sweep's figure beside the data `sweep.run_sweep` wrote into OUT; all three paths."""
    paths = [os.path.join(out_dir, name) for name in SWEEP_FILES]
    figures.save(figures.sweep_figure(rows), paths[-1])
    return paths


def sweep_table(rows):
    """Status, steps to the quality bar, final energy distance and the bound in bits/dim, a line per cell."""
    lines = [f"{'lr':>8} {'target':<7}{'schedule':<10}{'weighting':<11}{'seed':>5} {'status':<9}{'to bar':>7}"
             f"{'energy':>10}{'ELBO bpd':>10}"]
    for r in rows:
        number = lambda key, spec: "-" if r.get(key) is None else format(r[key], spec)  # noqa: E731
        lines.append(f"{r['lr']:>8g} {r['target']:<7}{r['schedule']:<10}{r['weighting']:<11}{r['seed']:>5} "
                     f"{r['status']:<9}{number('steps_to_bar', 'd'):>7}{number('energy_distance', '.4g'):>10}"
                     f"{number('elbo_bits_per_dim', '.4g'):>10}")
    return lines


# --- the schedules and the datasets ---------------------------------------------------------------------------------

def schedules_table(T, shift=1.0):
    """Every schedule at T steps, without and with zero terminal SNR: ᾱ at both ends, SNR and log-SNR range, the
    prior term; a schedule that is not defined at T says why. shift ≠ 1 moves every schedule in log-SNR by
    −2 log shift (SD3's time shift, Esser et al. 2024, eqs. 23–24); a shift out of range is a ScheduleError."""
    schedules.check_shift(shift)
    header = f"{'schedule':<16}{'zero-SNR':>9}{'ᾱ_0':>12}{'ᾱ_T-1':>12}{'SNR_0':>11}{'SNR_T-1':>11}" \
             f"{'λ_0':>9}{'λ_T-1':>9}{'prior KL':>11}"
    lines = [header, "-" * len(header)]
    for name in schedules.SCHEDULES:
        for zero in (False, True):
            lines.append(_schedule_row(name, T, zero, shift))
    lines.append(f"prior KL: KL(q(x_T|x_0) || N(0, I)) in nats per dimension for unit-variance data; above "
                 f"{schedules.PRIOR_KL_WARN:g} it is not negligible.")
    if shift != 1:
        lines.append(f"every schedule shifted in log-SNR by -2 log {shift:g} = {-2 * math.log(shift):.4f}")
    return lines


def _schedule_row(name, T, zero, shift=1.0):
    try:
        s = schedules.make_schedule(name, T, zero_terminal_snr=zero, shift=shift, warn=False)
    except schedules.ScheduleError as err:
        return f"{name:<16}{'yes' if zero else 'no':>9}  not defined: {err}"
    return (f"{name:<16}{'yes' if zero else 'no':>9}{s.alpha_bar[0]:>12.6g}{s.alpha_bar[-1]:>12.4g}"
            f"{s.snr[0]:>11.4g}{s.snr[-1]:>11.3g}{s.log_snr[0]:>9.3f}{s.log_snr[-1]:>9.3f}{s.prior_kl:>11.3g}")


def datasets_table():
    """Every toy dataset with its description, those with an exact density marked."""
    lines = [f"{name:<14}{'exact ' if dataset.mixture is not None else '      '}{dataset.description}"
             for name, dataset in data.DATASETS.items()]
    return lines + ["exact: a Gaussian mixture whose density, score and optimal denoiser are known in closed form"]
