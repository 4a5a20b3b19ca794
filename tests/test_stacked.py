"""Many runs as one stack: each run of a stack ends with the bits of the same run trained alone.

The reference is the single run — `train.train_step`, `runs.loop.train` — computed independently, one run at a time.
Tolerance: none. The stack is bit for bit the single runs in fp64 and fp32 (`minidiff/stacked.py` says why), so
the comparisons are of bytes; on a GPU (the `gpu` fixture of test_gpu.py) they are to RUN_TOL.
"""
import dataclasses
import os

import numpy as np
import pytest

from minidiff import layers, nn, stacked
from minidiff.accel.autodiff import value_and_vjp
from minidiff.accel.backend import to_numpy
from minidiff.runs import loop, stack
from minidiff.runs.checkpoint import load_arrays
from minidiff.train import DivergenceError, TrainConfig, make_problem, train_step
from test_gpu import RUN_TOL, gpu, on_cpu  # noqa: F401  (gpu: the device fixture)

BASE = dict(dataset="gmm2d", T=40, hidden=16, depth=2, time_dim=8, n_train=256, batch_size=32, steps=40,
            warmup_steps=5, log_every=5, checkpoint_every=10)


def mixed(dtype="float64"):
    """Five runs that share only the network: every target, four weightings, two schedules, two T, three time
    samplers, five learning rates and seeds; run 2 diverges at step 14 (lr 3000, unclipped), run 3 skips steps
    until it stops (explosion factor 1.05), run 4 is shorter."""
    base = dict(BASE, dtype=dtype)
    return [TrainConfig(**base, target="eps", lr=1e-3, seed=0),
            TrainConfig(**base, target="v", weighting="min-snr", schedule="linear", lr=3e-3, seed=1,
                        t_sampling="importance"),
            TrainConfig(**base, target="x0", lr=3000.0, seed=2, grad_clip=1e9),
            TrainConfig(**base, target="score", lr=2e-3, seed=3, explosion_factor=1.05, on_divergence="skip-step",
                        max_skips=3),
            TrainConfig(**{**base, "steps": 25, "T": 30}, target="mu", weighting="elbo", lr=1e-3, seed=4,
                        t_sampling="stratified")]


def flow_and_edm(dtype="float64"):
    """Four runs of the newer objectives: the flow target on the rectified flow with SD3's logit-normal times, EDM's
    preconditioned target (its c_in x_t enters the stack's tables, 1 for the others) with EDM's log-normal times,
    and v with the p2 weighting and SD3's mode sampler — and with `learned`, EDM2's uncertainty, a second stack."""
    base = dict(BASE, dtype=dtype)
    plain = [TrainConfig(**base, target="flow", schedule="rectified_flow", t_sampling="logit-normal", seed=7),
             TrainConfig(**base, target="edm", t_sampling="log-normal", seed=8, lr=3e-3),
             TrainConfig(**base, target="v", weighting="p2", t_sampling="mode", seed=9)]
    learned = [TrainConfig(**base, target="eps", weighting="learned", seed=10),
               TrainConfig(**base, target="edm", weighting="learned", seed=11, lr=3e-3)]
    return plain, learned


def test_stacks_of_the_flow_and_edm_objectives_and_a_learned_weighting_leave_the_folders_of_runs_alone(tmp_path):
    for k, configs in enumerate(flow_and_edm()):
        dirs = [tmp_path / f"stack{k}-{i}" for i in range(len(configs))]
        stack.train_stack(configs, [str(d) for d in dirs])
        for i, (config, folder) in enumerate(zip(configs, dirs)):
            alone(config, tmp_path / f"alone{k}-{i}")
            assert files_of(folder) == files_of(tmp_path / f"alone{k}-{i}"), (k, i)


def files_of(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def alone(config, out_dir):
    """The single run's outcome: its RunResult, or the DivergenceError that stopped it."""
    try:
        return loop.train(config, str(out_dir), evaluate=False)
    except DivergenceError as err:
        return err


def same_outcome(a, b, dir_a, dir_b):
    if isinstance(a, DivergenceError):
        return isinstance(b, DivergenceError) and str(a).replace(str(dir_a), "") == str(b).replace(str(dir_b), "")
    return repr(dataclasses.replace(a, out_dir="")) == repr(dataclasses.replace(b, out_dir=""))  # NaN as text


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_mixed_stack_leaves_the_folders_of_the_runs_trained_alone(tmp_path, dtype):
    configs = mixed(dtype)
    outcomes = stack.train_stack(configs, [str(tmp_path / f"stack{i}") for i in range(len(configs))])
    kinds = []
    for i, config in enumerate(configs):
        single = alone(config, tmp_path / f"alone{i}")
        assert same_outcome(outcomes[i], single, tmp_path / f"stack{i}", tmp_path / f"alone{i}"), (i, outcomes[i])
        assert files_of(tmp_path / f"stack{i}") == files_of(tmp_path / f"alone{i}"), i  # every byte
        kinds.append(type(single).__name__)
    assert kinds == ["RunResult", "RunResult", "DivergenceError", "DivergenceError", "RunResult"]
    assert outcomes[2].step == 14 and "max-skips 3" in str(outcomes[3])  # it diverged mid-run, and the other skipped


def test_each_step_of_a_stack_is_each_runs_train_step(rng):
    """Step by step against train.train_step, with one run's step made to diverge (a running median of 1e-12)."""
    configs = mixed()[:2] + mixed()[3:]
    singles, problems, xs = [], [], []
    for config in configs:
        data_rng, init_rng, train_rng, _ = loop.generators(config.seed)
        problems.append(make_problem(config))
        xs.append(loop.load_training_data(config, data_rng)[0])
        singles.append(loop.initial_state(config, 2, init_rng, train_rng))
    states = stacked.stack_states([loop.initial_state(c, 2, *loop.generators(c.seed)[1:3]) for c in configs])
    problem = stacked.stack_problems(problems)
    for k in range(20):
        medians = [1e-12 if (k, r) == (12, 1) else None for r in range(len(configs))]
        states, records = stacked.train_step(states, problem, problems, configs, xs, medians)
        for r, config in enumerate(configs):
            try:
                singles[r] = train_step(singles[r], problems[r], config, xs[r], medians[r])[0]
                assert records[r].error is None
            except DivergenceError as err:
                assert str(records[r].error) == str(err)
                singles[r] = dataclasses.replace(singles[r], step=singles[r].step + 1)
    for r, single in enumerate(singles):
        mine = stacked.state_of(states, r)
        assert mine.step == single.step and mine.adam["step"] == single.adam["step"]
        for name in single.params:
            for group in ("params", "ema"):
                np.testing.assert_array_equal(getattr(mine, group)[name], getattr(single, group)[name])
            np.testing.assert_array_equal(mine.adam["v." + name], single.adam["v." + name])
    assert stacked.state_of(states, 1).adam["step"] == 19  # the diverging step was not applied


def test_runs_at_different_steps_resume_as_one_stack(tmp_path):
    """One run stopped at step 17 (checkpoint there), one fresh: resumed together, each ends as if never stopped."""
    configs = [TrainConfig(**BASE, dtype="float64", target="v", seed=5, t_sampling="importance"),
               TrainConfig(**BASE, dtype="float64", target="eps", seed=6)]
    loop.train(configs[0], str(tmp_path / "s0"), stop_at=17, evaluate=False)
    assert load_arrays(tmp_path / "s0" / "checkpoint.npz")["step"] == 17
    stack.train_stack(configs, [str(tmp_path / "s0"), str(tmp_path / "s1")], resume=True)
    for i, config in enumerate(configs):
        alone(config, tmp_path / f"alone{i}")
        assert files_of(tmp_path / f"s{i}") == files_of(tmp_path / f"alone{i}")


def test_segments_call_back_with_each_runs_state_and_a_raise_stops_that_run_only(tmp_path):
    configs = mixed()[:2]
    seen = []

    def on_segment(r, state):
        seen.append((r, state.step))
        if (r, state.step) == (1, 20):
            raise RuntimeError("stop here")

    outcomes = stack.train_stack(configs, [str(tmp_path / "a"), str(tmp_path / "b")], segment=10,
                                 on_segment=on_segment)
    assert sorted(seen) == [(0, 0), (0, 10), (0, 20), (0, 30), (0, 40), (1, 0), (1, 10), (1, 20)]
    assert isinstance(outcomes[1], RuntimeError) and outcomes[0].steps == 40
    assert load_arrays(tmp_path / "b" / "checkpoint.npz")["step"] == 20


def test_all_runs_at_a_boundary_come_at_once_and_the_runs_returned_leave(tmp_path):
    configs = mixed()[:2]
    calls = []

    def on_segments(pairs):
        calls.append(sorted((r, state.step) for r, state in pairs))
        return {1: RuntimeError("stop here")} if (1, 20) in calls[-1] else {}

    outcomes = stack.train_stack(configs, [str(tmp_path / "a"), str(tmp_path / "b")], segment=10,
                                 on_segments=on_segments)
    assert calls == [[(0, 0), (1, 0)], [(0, 10), (1, 10)], [(0, 20), (1, 20)], [(0, 30)], [(0, 40)]]
    assert isinstance(outcomes[1], RuntimeError) and outcomes[0].steps == 40
    assert load_arrays(tmp_path / "b" / "checkpoint.npz")["step"] == 20
    with pytest.raises(ValueError, match="not both"):
        stack.train_stack(configs, [str(tmp_path / "c"), str(tmp_path / "d")], segment=10,
                          on_segment=lambda r, state: None, on_segments=on_segments)
    assert not (tmp_path / "c").exists()  # refused before any folder is made


def test_runs_that_do_not_share_a_network_are_refused(tmp_path):
    with pytest.raises(ValueError, match="share hidden"):
        stack.train_stack([TrainConfig(**BASE), TrainConfig(**{**BASE, "hidden": 8})], [str(tmp_path / "a"),
                                                                                          str(tmp_path / "b")])


@pytest.mark.parametrize("residual", [True, False])
def test_the_stacked_network_and_its_gradients_are_each_runs(rng, residual):
    """nn.apply and the VJP of every param through a stack of three, against each network alone (Fourier on)."""
    config = nn.Config(data_dim=2, hidden=8, depth=3, time_dim=4, fourier_features=2, residual=residual)
    nets = [nn.init(np.random.default_rng(s), config) for s in range(3)]
    for net in nets:
        net["out.W"] = rng.standard_normal(net["out.W"].shape)  # (the init's zero output stops the gradient)
    x, t, g = rng.standard_normal((3, 5, 2)), rng.uniform(0, 1000, (3, 5)), rng.standard_normal((3, 5, 2))
    names = list(nets[0])
    out, vjp = value_and_vjp(lambda *a: nn.apply(dict(zip(names, a)), x, t), *stacked.stack(nets).values())
    grads = vjp(g)
    for r, net in enumerate(nets):
        one, one_vjp = value_and_vjp(lambda *a: nn.apply(dict(zip(names, a)), x[r], t[r]), *net.values())
        np.testing.assert_array_equal(out[r], one)
        for mine, single in zip(grads, one_vjp(g[r])):
            np.testing.assert_array_equal(mine[r], single)
    shared = nn.apply(stacked.stack(nets), x, t[:, :1])  # one time per run, broadcast over its batch
    np.testing.assert_array_equal(shared, nn.apply(stacked.stack(nets), x, np.repeat(t[:, :1], 5, axis=1)))


def test_per_run_sums_add_in_the_order_of_one_run(rng):
    """The mean loss and the gradient norm of each run: the bits of `a.dot(b)` (an einsum adds otherwise)."""
    a, b = rng.standard_normal((4, 1000)), rng.standard_normal((4, 1000))
    np.testing.assert_array_equal(stacked.per_run_dot(a, b), [a[r].dot(b[r]) for r in range(4)])
    loss = layers.weighted_squared_error(a.reshape(4, 500, 2), b.reshape(4, 500, 2), np.ones((4, 500)))
    np.testing.assert_array_equal(loss[2], layers.weighted_squared_error(a[2].reshape(500, 2),
                                                                         b[2].reshape(500, 2), np.ones(500)))


def test_a_stack_on_the_device_matches_the_runs_alone_on_the_cpu(gpu, tmp_path):  # noqa: F811
    configs = mixed()[:2]
    stack.train_stack(configs, [str(tmp_path / "a"), str(tmp_path / "b")])
    device_params = [load_arrays(tmp_path / d / "checkpoint.npz")["params"] for d in ("a", "b")]
    with on_cpu():
        for config, params, name in zip(configs, device_params, ("c", "d")):
            loop.train(config, str(tmp_path / name), evaluate=False)
            cpu = load_arrays(tmp_path / name / "checkpoint.npz")["params"]
            for key in cpu:
                np.testing.assert_allclose(to_numpy(params[key]), cpu[key], rtol=RUN_TOL,
                                           atol=RUN_TOL * np.max(np.abs(cpu[key])))
