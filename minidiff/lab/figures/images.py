"""Figures of data beyond the plane: grids of images, pairwise projections, and the brightness of samples."""
import numpy as np

from minidiff.lab.figures.style import new_figure

GRID_SIDE = 8  # an 8 × 8 grid of images per panel
PAIR_COORDINATES = 4  # the pairwise projections show the first four coordinates
PIXEL_RANGE = (-1.0, 1.0)  # images live on [−1, 1] (Ho et al. 2020, §3.3): black to white


def _mosaic(x, image_shape, side=GRID_SIDE):
    """The first side² rows of x (n, H W) tiled into one (side (H + 1), side (W + 1)) array, NaN between tiles."""
    height, width = image_shape
    tiles = np.full((side * side, height + 1, width + 1), np.nan)
    shown = x[:side * side].reshape(-1, height, width)
    tiles[:len(shown), :height, :width] = shown
    return tiles.reshape(side, side, height + 1, width + 1).transpose(0, 2, 1, 3).reshape(side * (height + 1), -1)


def image_samples_figure(samples, data, image_shape, title=""):
    """Held-out images and model samples side by side, each an 8 × 8 grid, grey levels over [−1, 1]."""
    fig, axes = new_figure(2, width=3.4, height=3.6)
    for ax, x, label in [(axes[0, 0], data, "held-out data"), (axes[0, 1], samples, "samples")]:
        ax.imshow(_mosaic(x, image_shape), cmap="gray", vmin=PIXEL_RANGE[0], vmax=PIXEL_RANGE[1],
                  interpolation="nearest")
        ax.set_title(f"{label} (first {min(len(x), GRID_SIDE ** 2)} of {len(x)})")
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pairs_figure(samples, data, title=""):
    """Pairwise 2-D projections of the first coordinates: data (grey) and samples (blue) in every panel,
    histograms on the diagonal, on the same limits."""
    k = min(PAIR_COORDINATES, data.shape[1])
    fig, axes = new_figure(k, nrows=k, width=2.2, height=2.2)
    lo, hi = np.percentile(np.concatenate([data, samples])[:, :k], [0.5, 99.5], axis=0)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if i == j:
                bins = np.linspace(lo[i], hi[i], 40)
                ax.hist(data[:, i], bins=bins, density=True, histtype="step", color="0.35", label="held-out data")
                ax.hist(samples[:, i], bins=bins, density=True, histtype="step", color="C0", label="samples")
            else:
                ax.scatter(data[:, j], data[:, i], s=1, lw=0, c="0.35")
                ax.scatter(samples[:, j], samples[:, i], s=1, lw=0, c="C0", alpha=0.6)
                ax.set_ylim(lo[i], hi[i])
            ax.set_xlim(lo[j], hi[j])
            ax.set_xlabel(f"x[{j}]" if i == k - 1 else "")
            ax.set_ylabel(f"x[{i}]" if j == 0 else "")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{title} (D = {data.shape[1]}: coordinates 0 … {k - 1}, samples in blue)")
    fig.tight_layout()
    return fig


def brightness_figure(data):
    """The mean brightness of images against the data's, one panel per dataset: samples of the exact denoiser on a
    schedule that leaks signal at its last step, with and without zero terminal SNR (Lin et al. 2023, §3.1)."""
    rows = data["rows"]
    fig, axes = new_figure(len(rows), width=4.2, height=3.3)
    bins = np.linspace(-1.25, 1.25, 41)
    for ax, row in zip(axes[0], rows):
        ax.hist(row["data"], bins=bins, density=True, color="0.82", label="data")
        for i, run in enumerate(row["runs"]):
            label = f"{run['sampler']}, {'zero terminal SNR' if run['zero_terminal_snr'] else 'leaks'}"
            ax.hist(run["brightness"], bins=bins, density=True, histtype="step", lw=1.3, color=f"C{i}",
                    ls="-" if run["sampler"] == "ddim" else "--", label=label)
        ax.set_xlabel("mean brightness of an image")
        ax.set_title(f"{row['dataset']} (D = {row['dim']}): SNR_T·D·Var(b) = {row['leaked_snr']:.2f}", fontsize=8)
    axes[0, 0].set_ylabel("density")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"Exact denoiser ({data['target']}), {data['schedule']} T = {data['T']}, {data['steps']} steps")
    fig.tight_layout()
    return fig
