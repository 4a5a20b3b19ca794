"""Making the figures and the study: what `minidiff figures` does, every check before the first experiment.

    make(FiguresConfig(quick=False, names=(), out="figures", …), progress, echo) -> (files written, study or None)

The figures are regenerated (`study.regenerate`), then the study is rendered from their data (`render.write`):
by default into docs/study.md when the whole full-budget set goes into figures/, else only when a path is given.
A study needs the data of every figure (render.NEEDED); data that neither this run nor an earlier one into the
same folder wrote is an IncompleteStudy, after the figures were written.
"""
import dataclasses
import os

from minidiff.errors import UsageError
from minidiff.runs import files
from minidiff.runs.progress import silent
from minidiff.lab import study
from minidiff.lab.study import render

FIGURES_FOLDER = "figures"  # where the project keeps its figures
STUDY_FILE = os.path.join("docs", "study.md")  # the study of a full set written into FIGURES_FOLDER
STUDY_EXTENSIONS = (".md",)
DEFAULT_WORKERS = os.cpu_count() or 1  # processes of the stacks of runs and the likelihoods: one per core


class IncompleteStudy(RuntimeError):
    """The study was asked for, but the data of some figures is missing (the figures themselves were written)."""


@dataclasses.dataclass(frozen=True)
class FiguresConfig:
    """Which figures, at which budget (quick: study.QUICK, else study.FULL), into which folder; study: the path of
    the study (None: STUDY_FILE for a full set into FIGURES_FOLDER, else no study)."""
    quick: bool = False
    names: tuple = ()  # () : every figure, study.FIGURE_NAMES
    out: str = FIGURES_FOLDER
    svg: bool = False  # also SVG files
    seed: int = 0
    workers: int = DEFAULT_WORKERS
    study: str = None


def study_path(config):
    """Where the study goes (None: nowhere), after checking the names, the folder and the study's path."""
    unknown = [n for n in config.names if n not in study.FIGURE_NAMES]
    if unknown:
        raise UsageError(f"unknown figure {unknown[0]!r}; choose from: {', '.join(study.FIGURE_NAMES)}",
                         option="--only")
    if os.path.exists(config.out) and not os.path.isdir(config.out):
        raise UsageError(f"{config.out!r} is a file", option="--out")
    if config.study is not None:
        files.check_output_file(config.study, STUDY_EXTENSIONS)
        return config.study
    whole = not config.quick and not config.names and config.out == FIGURES_FOLDER
    return STUDY_FILE if whole else None


def make(config, *, progress=None, echo=silent):
    """Regenerate the figures `config` names, then the study; (files written, the study's path or None). echo(line)
    hears each step's outcome."""
    path = study_path(config)
    files.check_output_folder(config.out)
    written = study.regenerate(list(config.names) or list(study.FIGURE_NAMES), config.out, quick=config.quick,
                               seed=config.seed, svg=config.svg, workers=config.workers, progress=progress)
    echo(f"wrote {len(written)} files into {config.out}")
    if path is None:
        return written, None
    missing = [n for n in render.NEEDED if not os.path.exists(study.data_path(config.out, n))]
    if missing:
        raise IncompleteStudy(f"the study needs the data of {', '.join(missing)}; run without --only")
    render.write(config.out, path)
    echo(f"wrote {path}")
    return written, path
