"""Loss landscapes and trajectories: filter normalisation, deterministic slices, the near-orthogonality of random
directions, curvature fits, and the random-walk baseline of trajectory PCA (each against a closed form)."""
import numpy as np
import pytest

from minidiff import nn
from minidiff.runs import loop as run
from minidiff.lab.diagnostics import gradvar, landscape, applied, trajectory
from minidiff.train import TrainConfig, make_problem, per_example_loss

TINY = dict(T=40, hidden=16, depth=2, time_dim=8, n_train=256, batch_size=32, log_every=5, checkpoint_every=10,
            warmup_steps=5, steps=20, dataset="gmm2d")


def trained_like(rng):
    """A small fp64 network with a non-zero output layer and its loss, as a trained one would have."""
    config = TrainConfig(target="v", dtype="float64", **{k: v for k, v in TINY.items() if k in ("T", "hidden",
                                                                                              "depth", "time_dim")})
    params = nn.init(np.random.default_rng(2), config.network(2), dtype=np.float64)
    params["out.W"] = 0.2 * rng.standard_normal(params["out.W"].shape)
    return make_problem(config), params


def test_filter_normalisation_gives_each_column_the_norm_of_its_filter(rng):
    _, params = trained_like(rng)
    params["residual.0.W"][:, 3] = 0.0  # a dead unit: its direction must be 0, not NaN
    direction = landscape.random_direction(params, rng)
    for name, W in params.items():
        if W.ndim == 2:
            np.testing.assert_allclose(np.linalg.norm(direction[name], axis=0), np.linalg.norm(W, axis=0),
                                       rtol=1e-9, atol=1e-12)
        else:
            assert np.all(direction[name] == 0), name  # biases are not moved
    assert np.all(np.isfinite(direction["residual.0.W"]))


def test_two_dimensional_slice_at_the_origin_is_the_loss_at_the_parameters(rng):
    problem, params = trained_like(rng)
    batch = gradvar.draw_examples(rng.standard_normal((100, 2)), 64, problem.schedule.T, rng)
    d, e = landscape.random_direction(params, rng), landscape.random_direction(params, rng)
    grid = np.linspace(-1, 1, 5)
    surface = landscape.slice_2d(params, problem, batch, d, e, grid, grid)
    direct = per_example_loss(params, problem, *batch).mean()
    assert surface[2, 2] == pytest.approx(direct, rel=1e-14)
    assert surface[0, 0] != pytest.approx(direct, rel=1e-3)  # the slice does move away from θ
    np.testing.assert_array_equal(surface, landscape.slice_2d(params, problem, batch, d, e, grid, grid))
    np.testing.assert_allclose(surface[:, 2], landscape.slice_1d(params, problem, batch, d, grid), rtol=1e-14)


def test_random_directions_are_nearly_orthogonal():
    """Equal filters: E|cos| = √(2/(πn)) with n the number of weights (the normal approximation, n = 2000)."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal((50, 40))
    params = {"layer.W": W / np.linalg.norm(W, axis=0), "layer.b": np.zeros(40)}
    assert landscape.effective_dimension(params) == pytest.approx(2000)
    cosines = np.abs([landscape.cosine(landscape.random_direction(params, rng), landscape.random_direction(params, rng))
                      for _ in range(3000)])
    assert abs(cosines.mean() - np.sqrt(2 / (np.pi * 2000))) < 4 * cosines.std() / np.sqrt(len(cosines))


def test_filter_normalised_cosines_follow_the_effective_dimension(rng):
    _, params = trained_like(rng)  # unequal filters: n_eff is well below the number of weights
    n_eff, n = landscape.effective_dimension(params), sum(W.size for W in params.values() if W.ndim == 2)
    cosines = np.abs([landscape.cosine(landscape.random_direction(params, rng), landscape.random_direction(params, rng))
                      for _ in range(3000)])
    error = 4 * cosines.std() / np.sqrt(len(cosines))
    assert abs(cosines.mean() - np.sqrt(2 / (np.pi * n_eff))) < error
    assert abs(cosines.mean() - np.sqrt(2 / (np.pi * n))) > error  # n_eff = 376 of n = 448: the test can tell


def test_curvature_of_a_quadratic_and_of_a_quartic():
    alphas = np.linspace(-1, 1, 41)
    assert landscape.curvature(alphas, 3 + 2 * alphas + 5 * alphas ** 2) == pytest.approx(10, rel=1e-10)
    value, relative = landscape.sharpness(alphas, 2 + 5 * alphas ** 2 + 40 * alphas ** 4, radius=0.05)
    assert value == pytest.approx(10, rel=0.02) and relative == pytest.approx(5, rel=0.02)  # f''(0) = 10, f(0) = 2
    coarse = np.array([-1.0, 0.0, 1.0])  # a grid coarser than the radius: the central second difference
    assert landscape.curvature(coarse, 2 + 5 * coarse ** 2 + 40 * coarse ** 4) == pytest.approx(90)


def test_interpolation_ends_at_the_two_solutions(rng):
    problem, params_a = trained_like(rng)
    params_b = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params_a.items()}
    batch = gradvar.draw_examples(rng.standard_normal((100, 2)), 32, problem.schedule.T, rng)
    line = landscape.interpolation(params_a, params_b, problem, batch, [0.0, 0.5, 1.0])
    assert line[0] == pytest.approx(landscape.loss_at(params_a, problem, batch), rel=1e-14)
    assert line[2] == pytest.approx(landscape.loss_at(params_b, problem, batch), rel=1e-12)


def test_pca_of_a_random_walk_gives_the_six_over_pi_squared_k_squared_ratios():
    """Antognini & Sohl-Dickstein 2018: ratios 6/(π²k²) for a walk of many steps in many more dimensions, and the
    exact ratios for a few snapshots (which is what a run records)."""
    rng = np.random.default_rng(11)
    np.testing.assert_allclose(trajectory.random_walk_ratios(3), [0.6079, 0.1520, 0.0675], atol=1e-4)
    np.testing.assert_allclose(trajectory.random_walk_ratios(3, 500), trajectory.random_walk_ratios(3), atol=1e-5)
    for snapshots, repeats in ((50, 20), (5, 50)):
        ratios = np.array([trajectory.trajectory_pca(np.cumsum(rng.standard_normal((snapshots, 2000)), axis=0))
                           ["ratios"][:3] for _ in range(repeats)])
        baseline = trajectory.random_walk_ratios(3, snapshots)
        error = 4 * ratios.std(axis=0) / np.sqrt(repeats) + 2e-3  # sampling error + the finite dimension's bias
        assert np.all(np.abs(ratios.mean(axis=0) - baseline) < error), (snapshots, ratios.mean(axis=0), baseline)
    assert trajectory.random_walk_ratios(1, 5)[0] > trajectory.random_walk_ratios(1)[0] + 0.04  # 0.65 vs 0.61
    line = trajectory.trajectory_pca(np.outer(np.arange(10.0), rng.standard_normal(50)))  # a straight path
    assert line["ratios"][0] == pytest.approx(1.0, abs=1e-12)
    assert line["coords"][-1] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_training_in_segments_records_the_same_run(tmp_path):
    config = TrainConfig(**TINY)
    seen = []
    trajectory.train_with_snapshots(config, str(tmp_path / "seg"), 8, on_segment=lambda s: seen.append(s.step),
                                    evaluate=False)
    run.train(config, str(tmp_path / "whole"), progress=False, evaluate=False)
    steps, thetas, names, shapes = trajectory.load_snapshots(str(tmp_path / "seg"))
    assert steps.tolist() == seen == [0, 8, 16, 20]
    whole = run.load_run(str(tmp_path / "whole"))[3].params
    last = trajectory.unflatten(thetas[-1], names, shapes)
    for name in whole:  # exact resume: the segmented run is the uninterrupted one, bit for bit
        np.testing.assert_array_equal(last[name], whole[name])
    first = trajectory.unflatten(thetas[0], names, shapes)
    assert np.all(first["out.W"] == 0)  # step 0 is the initialisation (zero output layer)


def test_landscape_of_a_run_with_snapshots(tmp_path):
    out = str(tmp_path / "r")
    trajectory.train_with_snapshots(TrainConfig(**TINY), out, 5, evaluate=False)
    result = applied.landscape_of_run(out, span=0.5, points=5, grid=3, n=32)
    assert result["surface"][1][1] == pytest.approx(result["loss"], rel=1e-14)
    assert result["slice_d"][2] == pytest.approx(result["loss"], rel=1e-14)
    assert len(result["pca"]["coords"]) == 5 and result["pca"]["surface"].shape == (3, 3)
