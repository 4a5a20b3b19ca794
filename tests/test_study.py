"""The figures and the study: a quick figure renders, reruns give the same bytes, the README's figures exist."""
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from minidiff.lab import study
from minidiff.lab.study import render as report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHEAP = ["schedules", "forward", "weighting"]  # no training: each renders in about a second


def test_quick_figures_render_and_rerun_byte_for_byte(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        written = study.regenerate(CHEAP, str(out), quick=True, progress=False)
        assert len(written) == 2 * len(CHEAP)
    for name in CHEAP:
        png = (first / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        assert png == (second / f"{name}.png").read_bytes()
        assert (first / "data" / f"{name}.json").read_bytes() == (second / "data" / f"{name}.json").read_bytes()


def test_forward_figure_data_matches_q_sample_moments(tmp_path):
    """The stored x_t at the last step of cosine T = 1000 (ᾱ = 2.4e-9) is N(0, I) to within sampling error."""
    study.regenerate(["forward"], str(tmp_path), quick=True, progress=False)
    data = json.loads((tmp_path / "data" / "forward.json").read_text())
    last = np.asarray(data["panels"][-1]["points"])
    assert data["panels"][-1]["t"] == 999
    np.testing.assert_allclose(last.mean(0), 0.0, atol=5 / np.sqrt(len(last)))
    np.testing.assert_allclose(last.std(0), 1.0, atol=5 / np.sqrt(2 * len(last)))


def test_every_figure_the_readme_shows_exists():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    study_text = open(os.path.join(ROOT, "docs", "study.md"), encoding="utf-8").read()
    paths = re.findall(r"\]\((figures/[^)]+\.png)\)", readme)
    paths += ["figures/" + p for p in re.findall(r"\]\(\.\./figures/([^)]+\.png)\)", study_text)]
    assert paths, "the README shows no figure"
    for path in paths:
        assert os.path.exists(os.path.join(ROOT, path)), path


def test_the_committed_study_is_the_rendering_of_the_committed_data():
    """docs/study.md carries no number typed by hand: rendering the template from figures/data gives it exactly."""
    data = {name: json.load(open(study.data_path(os.path.join(ROOT, "figures"), name))) for name in report.NEEDED}
    with open(report.TEMPLATE, encoding="utf-8") as f:
        rendered = report.render(f.read(), data)
    assert rendered == open(os.path.join(ROOT, "docs", "study.md"), encoding="utf-8").read()


@pytest.mark.parametrize("value, text", [(None, "–"), (float("nan"), "NaN"), (float("-inf"), "−∞"), (0, "0"),
                                         (3420.4, "3420"), (0.004661, "0.00466"), (2.43e-9, "2.43e-9"),
                                         (1.5e7, "1.50e7")])
def test_number_format(value, text):
    assert report.fmt(value) == text


def test_unknown_placeholder_is_an_error():
    with pytest.raises(KeyError, match="unknown value 'nonsense'"):
        report.render("a {{nonsense}} b", {})
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        report.render("{{table:nope}}", {})


@pytest.mark.parametrize("args, message", [(["--only", "pretty"], "unknown figure 'pretty'"),
                                           (["--study", "s.txt"], "must end in .md")])
def test_figures_cli_bad_input(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.main, ["figures", "--quick", *args])
    assert result.exit_code == 2 and message in result.output
    assert list(tmp_path.iterdir()) == []
