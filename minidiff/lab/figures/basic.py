"""The basic figures: noise schedules, the toy datasets, samples against data."""
import numpy as np

from minidiff.schedules import SCHEDULES, ScheduleError, make_schedule
from minidiff.lab.figures.style import new_figure, save
from minidiff.lab.figures.images import image_samples_figure, pairs_figure


def schedules_figure(T=1000, names=None, zero_terminal_snr=(False, True), shift=1.0):
    """ᾱ, SNR and log-SNR against t for each named schedule (dashed: its zero-terminal-SNR rescale), shifted in
    log-SNR by −2 log shift."""
    fig, axes = new_figure(3)
    for i, name in enumerate(names or SCHEDULES):
        for zero in zero_terminal_snr:
            try:
                schedule = make_schedule(name, T, zero_terminal_snr=zero, shift=shift, warn=False)
            except ScheduleError:
                continue
            style = dict(color=f"C{i}", ls="--" if zero else "-", lw=1.2, label=None if zero else name)
            t = np.arange(T)
            axes[0, 0].plot(t, schedule.alpha_bar, **style)
            axes[0, 1].semilogy(t, schedule.snr, **style)
            axes[0, 2].plot(t, schedule.log_snr, **style)
    for ax, label in zip(axes[0], ["ᾱ_t", "SNR_t", "log-SNR λ_t"]):
        ax.set_xlabel("t")
        ax.set_title(label)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Noise schedules, T = {T} (dashed: zero terminal SNR)")
    fig.tight_layout()
    return fig


def _scatter(ax, x, **style):
    if x.shape[1] == 1:  # 1-D data: a histogram is the honest picture
        ax.hist(x[:, 0], bins=60, density=True, histtype="step", color=style.get("c", "C0"), label=style.get("label"))
    else:
        ax.scatter(x[:, 0], x[:, 1], s=style.pop("s", 2), lw=0, **style)


def samples_figure(samples, data, title="", image_shape=None):
    """Held-out data and model samples side by side, on the same axes limits: for image data (image_shape =
    (height, width)) two grids of images, for other data in more than two dimensions pairwise projections."""
    if image_shape is not None:
        return image_samples_figure(samples, data, image_shape, title)
    if data.shape[1] > 2:
        return pairs_figure(samples, data, title)
    fig, axes = new_figure(2, width=3.4, height=3.2)
    lo, hi = np.percentile(np.concatenate([data, samples]), [0.5, 99.5], axis=0)
    pad = 0.1 * (hi - lo)
    for ax, x, label, color in [(axes[0, 0], data, "held-out data", "0.35"), (axes[0, 1], samples, "samples", "C0")]:
        _scatter(ax, x, c=color, label=label)
        ax.set_title(f"{label} (n = {len(x)})")
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        if x.shape[1] > 1:
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            ax.set_aspect("equal", adjustable="box")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_samples(samples, data, title, path, image_shape=None):
    """`samples_figure` written to path: what a finished run draws into its samples.png (`runs.loop.train`'s plot)."""
    save(samples_figure(samples, data, title=title, image_shape=image_shape), path)


def datasets_figure(n=2000, seed=0):
    """A preview of every toy dataset (n points each)."""
    from minidiff.data import DATASETS, sample_dataset
    names = list(DATASETS)
    cols = 5
    fig, axes = new_figure(cols, nrows=int(np.ceil(len(names) / cols)), width=2.4, height=2.4)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        x, shape = sample_dataset(name, n, np.random.default_rng(seed)), DATASETS[name].image_shape
        if shape is None:
            _scatter(ax, x, c="C0")
        else:  # an image dataset: one of its images
            ax.imshow(x[0].reshape(shape), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.axis("off")
        ax.set_title(name)
    fig.tight_layout()
    return fig
