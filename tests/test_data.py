"""Toy datasets, the user's data files and standardization, each checked against what its docstring states."""
import io
import json
import re

import numpy as np
import pytest

from minidiff.runs import datafile
from minidiff.data import DATASETS, dataset_names, get_mixture, sample_dataset
from minidiff.runs.datafile import DataError, load_data_file, standardize, unstandardize

Z = 5.0  # Monte Carlo tolerance in standard errors
N = 4000
PLANE = [name for name in dataset_names() if DATASETS[name].image_shape is None]  # images: tests/test_images.py


def close_in_mean(values, expected):
    """The sample mean of values is within Z standard errors of expected."""
    values = np.asarray(values, dtype=np.float64)
    return np.all(np.abs(values.mean(0) - expected) < Z * values.std(0) / np.sqrt(len(values)))


# --- every dataset --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PLANE)
def test_dataset_shape_dtype_and_finiteness(name, rng):
    x = sample_dataset(name, N, rng)
    D = 1 if name == "gmm1d" else 2
    assert x.shape == (N, D) and x.dtype == np.float64 and np.all(np.isfinite(x))
    assert DATASETS[name].description and "\n" not in DATASETS[name].description


@pytest.mark.parametrize("name", dataset_names())
def test_dataset_is_reproducible_from_the_seed(name):
    first = sample_dataset(name, 100, np.random.default_rng(7))
    np.testing.assert_array_equal(first, sample_dataset(name, 100, np.random.default_rng(7)))
    assert not np.allclose(first, sample_dataset(name, 100, np.random.default_rng(8)))


@pytest.mark.parametrize("name", PLANE)
def test_dataset_spans_about_plus_minus_three(name, rng):
    x = sample_dataset(name, N, rng)
    assert np.all(np.abs(x) < 5.0)  # the widest documented extent is moons' 3.6 plus noise
    assert 1.5 < np.quantile(np.abs(x), 0.99) < 4.0
    assert np.all((0.4 < x.std(0)) & (x.std(0) < 2.5))


def test_two_samples_of_a_dataset_are_independent_draws_not_a_grid():
    # sklearn places moons on an even grid; here points are i.i.d., so two draws differ beyond the noise
    a = sample_dataset("moons", 50, np.random.default_rng(1))
    b = sample_dataset("moons", 50, np.random.default_rng(2))
    assert np.abs(np.sort(a[:, 0]) - np.sort(b[:, 0])).max() > 0.3


def test_moons_follows_the_common_setup(rng):
    x = sample_dataset("moons", 50_000, rng)
    # unit moons have mean (½, ¼): outer (E cos θ, E sin θ) = (0, 2/π), inner (1, ½ − 2/π); rescaled:
    assert close_in_mean(x, [(0.5 + 0.3) * 2 - 1, (0.25 + 0.3) * 3 - 1])
    noise = 5 * 0.05 * np.array([2.0, 3.0])  # five noise stds after the rescale
    assert np.all(x.min(0) > np.array([-2.4, -1.6]) - noise) and np.all(x.max(0) < np.array([3.6, 2.9]) + noise)
    # x ← (x + 0.3)·2 − 1 maps the unit noise 0.05 to 0.1: the inner moon's tip at θ = 0 is at x = −0.4
    unit_x = (x[:, 0] + 1) / 2 - 0.3
    unit_y = (x[:, 1] + 1) / 3 - 0.3
    on_a_moon = np.minimum(np.abs(np.hypot(unit_x, unit_y) - 1), np.abs(np.hypot(unit_x - 1, unit_y - 0.5) - 1))
    assert np.quantile(on_a_moon, 0.5) < 0.05  # half the points within one noise std of a unit circle


def test_circles_have_the_documented_radii(rng):
    r = np.hypot(*sample_dataset("circles", 20_000, rng).T)
    outer = r > (2.5 + 1.25) / 2
    assert close_in_mean(outer, 0.5)
    assert abs(np.median(r[outer]) - 2.5) < 0.01 and abs(np.median(r[~outer]) - 1.25) < 0.01


def test_line_is_the_diagonal_with_thin_noise(rng):
    x = sample_dataset("line", 20_000, rng)
    across = (x[:, 0] - x[:, 1]) / np.sqrt(2)  # the noise orthogonal to the diagonal: N(0, 0.05²)
    assert abs(across.std() - 0.05) < Z * 0.05 / np.sqrt(2 * len(x))
    along = (x[:, 0] + x[:, 1]) / 2  # u ~ U(−3, 3) plus noise: variance 3² / 3 + 0.05² / 2
    assert abs(along.var() - (3.0 + 0.05 ** 2 / 2)) < 0.1


def test_checkerboard_points_lie_on_black_cells(rng):
    x = sample_dataset("checkerboard", 20_000, rng)
    cells = np.floor((x + 3.0) / 1.5).astype(int)
    assert np.all((x >= -3) & (x <= 3)) and np.all(cells.sum(1) % 2 == 0)
    black = (np.add.outer(range(4), range(4)) % 2 == 0).ravel()  # cell i * 4 + j is black when i + j is even
    counts = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)[black]
    assert np.all(np.abs(counts / len(x) - 1 / 8) < Z * np.sqrt(1 / 8 * 7 / 8 / len(x)))  # uniform over 8 cells


def test_swissroll_and_spirals_radii_stay_within_their_curves(rng):
    roll = sample_dataset("swissroll", 20_000, rng)
    assert np.hypot(*roll.T).max() < 4.5 * np.pi / 5 + 5 * 0.2 * np.sqrt(2)
    spiral = sample_dataset("spirals", 20_000, rng)
    assert np.hypot(*spiral.T).max() < np.pi + 5 * 0.1 * np.sqrt(2)
    assert close_in_mean(spiral, [0.0, 0.0])  # the two arms are point reflections of each other


def test_mixture_datasets_sample_their_mixture(rng):
    for name in ["8gaussians", "gaussian", "gmm1d", "gmm2d"]:
        mixture = get_mixture(name)
        np.testing.assert_array_equal(sample_dataset(name, 10, np.random.default_rng(3)),
                                      mixture.sample(10, np.random.default_rng(3)))
    eight = get_mixture("8gaussians")
    np.testing.assert_allclose(np.hypot(*eight.means.T), 2 * np.sqrt(2), rtol=1e-14)
    np.testing.assert_allclose(eight.covs, np.broadcast_to(0.125 * np.eye(2), (8, 2, 2)), rtol=1e-14)


def test_unknown_dataset_lists_the_allowed_names(rng):
    with pytest.raises(ValueError) as error:
        sample_dataset("mooons", 10, rng)
    assert "mooons" in str(error.value) and all(name in str(error.value) for name in dataset_names())
    with pytest.raises(ValueError, match="8gaussians"):
        get_mixture("moons")


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_bad_sample_size_is_refused(n, rng):
    with pytest.raises(ValueError, match="integer >= 1"):
        sample_dataset("moons", n, rng)


def test_a_generator_is_required():
    with pytest.raises(TypeError, match="Generator"):
        sample_dataset("moons", 10, 42)


# --- the user's data files ------------------------------------------------------------------------------------

def test_npy_and_csv_load_as_float64_rows(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(6, 2) / 7
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_array_equal(load_data_file(tmp_path / "a.npy"), x)
    np.save(tmp_path / "ints.npy", np.arange(6, dtype=np.int32).reshape(3, 2))
    loaded = load_data_file(str(tmp_path / "ints.npy"))
    assert loaded.dtype == np.float64 and loaded.tolist() == [[0, 1], [2, 3], [4, 5]]
    (tmp_path / "b.csv").write_text("x,y\n" + "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in x) + "\n\n")
    np.testing.assert_array_equal(load_data_file(tmp_path / "b.csv"), x)  # repr round-trips float64 exactly
    (tmp_path / "c.CSV").write_text("1.5,2\n-3e-2,4\n")  # no header, upper-case extension
    np.testing.assert_array_equal(load_data_file(tmp_path / "c.CSV"), [[1.5, 2.0], [-0.03, 4.0]])


def test_one_dimensional_data_is_read_as_one_column(tmp_path):
    np.save(tmp_path / "v.npy", np.array([1.0, 2.0, 3.0]))
    assert load_data_file(tmp_path / "v.npy").shape == (3, 1)
    (tmp_path / "v.csv").write_text("value\n1\n2\n3\n")
    assert load_data_file(tmp_path / "v.csv").shape == (3, 1)


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


BAD_FILES = {  # file name, content, words the message must contain
    "missing": ("nothing.npy", None, "does not exist"),
    "extension": ("data.txt", "1,2\n3,4\n", ".npy, .csv"),
    "empty csv": ("empty.csv", "", "no data rows"),
    "header only": ("header.csv", "x,y\n", "no data rows"),
    "non-numeric": ("words.csv", "x,y\n1,2\n3,abc\n", "line 3"),
    "two headers": ("headers.csv", "x,y\nunits,m\n1,2\n", "line 2"),
    "ragged": ("ragged.csv", "1,2\n3,4,5\n", "line 2 has 3 values"),
    "nan csv": ("nan.csv", "1,2\nnan,4\n5,6\n", "NaN or Inf"),
    "inf npy": ("inf.npy", np.array([[1.0, np.inf], [2.0, 3.0]]), "NaN or Inf"),
    "3-D": ("cube.npy", np.zeros((2, 2, 2)), "3-D"),
    "0-D": ("scalar.npy", np.array(3.0), "0-D"),
    "one row": ("row.csv", "1,2\n", "at least 2 rows"),
    "no columns": ("wide.npy", np.zeros((5, 0)), "at least 2 rows and 1 column"),
    "empty npy": ("none.npy", np.zeros((0, 2)), "at least 2 rows"),
    "pickled": ("objects.npy", np.array([{"a": 1}, None], dtype=object), "Python objects"),
    "strings": ("strings.npy", np.array(["a", "b"]), "dtype"),
    "complex": ("complex.npy", np.array([1j, 2j]), "dtype"),
    "not npy": ("fake.npy", b"hello, this is not numpy", "not a .npy file"),
    "truncated": ("cut.npy", _npy_bytes(np.zeros((100, 2)))[:300], "not a readable .npy file"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_data_file_raises_data_error_naming_the_file(case, tmp_path):
    name, content, words = BAD_FILES[case]
    path = tmp_path / name if content is None else _write(tmp_path, name, content)
    with pytest.raises(DataError, match=re.escape(words)) as error:
        load_data_file(path)
    message = str(error.value)
    assert isinstance(error.value, ValueError) and name in message and "\n" not in message


def test_implausibly_large_files_are_refused(tmp_path, monkeypatch):
    np.save(tmp_path / "big.npy", np.zeros((50, 2)))
    (tmp_path / "big.csv").write_text("1,2\n" * 50)
    monkeypatch.setattr(datafile, "MAX_VALUES", 99)  # 100 numbers in each file
    for name in ["big.npy", "big.csv"]:
        with pytest.raises(DataError, match=rf"{name}.*limit 99"):
            load_data_file(tmp_path / name)
    monkeypatch.setattr(datafile, "MAX_FILE_BYTES", 10)
    with pytest.raises(DataError, match=r"big\.csv.*larger than 10 bytes"):
        load_data_file(tmp_path / "big.csv")


# --- standardization ------------------------------------------------------------------------------------------

def test_standardize_gives_zero_mean_unit_std_and_inverts(rng):
    x = rng.standard_normal((500, 3)) * [1.0, 20.0, 0.01] + [5.0, -3.0, 100.0]
    z, stats = standardize(x)
    # round-off in x − mean is ~1e-16 |mean|, i.e. ~1e-16 |mean| / std after scaling
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12 * (1 + np.abs(x.mean(0)) / x.std(0)).max())
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-12)
    stats = json.loads(json.dumps(stats))  # the statistics survive a JSON config
    np.testing.assert_allclose(unstandardize(z, stats), x, rtol=1e-12, atol=1e-12)


def test_standardize_refuses_a_constant_column():
    with pytest.raises(DataError, match=r"\[1\]"):
        standardize(np.array([[1.0, 2.0], [3.0, 2.0]]))
