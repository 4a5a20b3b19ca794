"""The formulations the study's second edition compares, and the runs it trains for them.

A formulation is what a paper fixes about the objective: the target, the weighting, the training distribution of t,
the noise schedule (and its zero-terminal-SNR rescale or log-SNR shift). The network, the optimiser and the data are
the study's, the same for every formulation, so that only the formulation changes between the rows of a table.

    FORMULATIONS        the ranked formulations, each with the paper it comes from
    SCHEDULE_VARIANTS   one target (v, uniform) on every schedule: the schedules ranked by exact KL
    RESOLUTIONS         the log-SNR shifts tried at each image size of the upsampled mixture
    run_list(budget)    [(group, dataset, formulation, lr, seed)] of every run, in a fixed order
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Formulation:
    name: str
    target: str
    weighting: str = "uniform"
    t_sampling: str = "uniform"
    schedule: str = "cosine"
    zero_terminal_snr: bool = False
    snr_shift: float = 1.0
    source: str = ""

    def options(self):
        """The TrainConfig options that make this formulation."""
        return dict(target=self.target, weighting=self.weighting, t_sampling=self.t_sampling, schedule=self.schedule,
                    zero_terminal_snr=self.zero_terminal_snr, snr_shift=self.snr_shift)


F = Formulation
FORMULATIONS = (
    F("eps · linear", "eps", schedule="linear", source="Ho et al. 2020 (DDPM)"),
    F("eps · cosine", "eps", source="Nichol & Dhariwal 2021"),
    F("eps · min-SNR-5", "eps", weighting="min-snr", source="Hang et al. 2023"),
    F("eps · P2", "eps", weighting="p2", source="Choi et al. 2022"),
    F("eps · sigmoid", "eps", weighting="sigmoid", source="Kingma & Gao 2023"),
    F("eps · ELBO", "eps", weighting="elbo", source="Kingma et al. 2021 (the bound itself)"),
    F("x0 · uniform", "x0", source="the post's x0-prediction"),
    F("x0 · min-SNR-5", "x0", weighting="min-snr", source="Hang et al. 2023"),
    F("x0 · truncated SNR", "x0", weighting="trunc-snr", source="Salimans & Ho 2022"),
    F("v · cosine", "v", source="Salimans & Ho 2022"),
    F("v · min-SNR-5", "v", weighting="min-snr", source="Hang et al. 2023"),
    F("v · zero-SNR scaled-linear", "v", schedule="scaled_linear", zero_terminal_snr=True, source="Lin et al. 2024"),
    F("v · logit-normal", "v", t_sampling="logit-normal", source="Esser et al. 2024 (SD3, eps/v rows)"),
    F("score · uniform", "score", source="Song et al. 2021, unweighted"),
    F("score · σ²-weighted", "score", weighting="snr", source="Song et al. 2021, λ(t) = σ²"),
    F("mu · uniform", "mu", source="the post's eq. (8), unweighted"),
    F("mu · ELBO", "mu", weighting="elbo", source="the post's eq. (8) with its 1/2σ² (the bound)"),
    F("flow · uniform", "flow", schedule="rectified_flow", source="Liu et al. 2023 (rectified flow)"),
    F("flow · logit-normal", "flow", t_sampling="logit-normal", schedule="rectified_flow",
      source="Esser et al. 2024 (SD3's choice)"),
    F("flow · mode", "flow", t_sampling="mode", schedule="rectified_flow", source="Esser et al. 2024"),
    F("flow · CosMap", "flow", t_sampling="cosmap", schedule="rectified_flow", source="Esser et al. 2024"),
    F("EDM", "edm", weighting="edm", t_sampling="log-normal", source="Karras et al. 2022"),
    F("EDM2 learned weighting", "edm", weighting="learned", t_sampling="log-normal", source="Karras et al. 2024"),
)

SCHEDULE_VARIANTS = (
    F("linear", "v", schedule="linear", source="Ho et al. 2020"),
    F("quadratic", "v", schedule="quadratic", source="Ho et al. 2020, released code"),
    F("scaled-linear", "v", schedule="scaled_linear", source="Stable Diffusion"),
    F("scaled-linear, zero SNR", "v", schedule="scaled_linear", zero_terminal_snr=True, source="Lin et al. 2024"),
    F("sigmoid", "v", schedule="sigmoid", source="Chen 2023"),
    F("cosine", "v", source="Nichol & Dhariwal 2021"),
    F("cosine, zero SNR", "v", zero_terminal_snr=True, source="Lin et al. 2024"),
    F("rectified flow", "v", schedule="rectified_flow", source="Liu et al. 2023"),
)

# The resolution shift: the upsampled mixture at 8×8 (D = 64, the base d₀) and 16×16 (D = 256), each trained with
# the cosine schedule shifted by s (λ → λ − 2 log s). Hoogeboom et al. 2023 (§3.1) shift log-SNR by 2 log(d/d₀)
# for images of side d, i.e. s = d/d₀ = 2 at 16×16; SD3 (Esser et al. 2024, §5.3.2) shifts its time by
# α = √(m/n) for m and n pixels, the same s = 2 here. Both predict the best s at 16×16 to be 2, at 8×8 to be 1.
RESOLUTIONS = (("smooth8x8", 8), ("smooth16x16", 16))
BASE_SIDE = 8
SHIFTS = (0.25, 0.5, 1.0, 2.0, 4.0)
RESOLUTION_TARGET = "v"

RANKED_DATASETS = ("moons", "smooth8x8", "digits")
EXACT_DATASET = "smooth8x8"  # the mixture whose exact KL ranks the formulations and the schedules
STABILITY_DATASET = "moons"


def shifted(side, shift):
    return F(f"{side}×{side}, s = {shift:g}", RESOLUTION_TARGET, snr_shift=shift)


def run_list(budget):
    """[(group, dataset, formulation, lr, seed)]: the ranking (every formulation on every ranked dataset at the
    base learning rate), the stability grid (the other learning rates on STABILITY_DATASET), the schedules on
    EXACT_DATASET and the resolution shifts, each for every seed."""
    seeds, base = range(budget.rank_seeds), budget.rank_lrs[0]
    runs = [("rank", d, f, base, s) for d in RANKED_DATASETS for f in FORMULATIONS for s in seeds]
    runs += [("lr", STABILITY_DATASET, f, lr, s) for lr in budget.rank_lrs[1:] for f in FORMULATIONS for s in seeds]
    runs += [("schedule", EXACT_DATASET, f, base, s) for f in SCHEDULE_VARIANTS for s in seeds]
    runs += [("resolution", d, shifted(side, shift), base, s) for d, side in RESOLUTIONS for shift in SHIFTS
             for s in seeds[:budget.resolution_seeds]]
    return runs
