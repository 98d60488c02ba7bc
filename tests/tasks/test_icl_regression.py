"""icl_regression (arena/tasks/icl_regression.py): the data layout, and the closed-form baselines against direct numpy
solutions (lstsq per sequence and prefix, a brute-force step-size search).

    python -m pytest -q tests/tasks/test_icl_regression.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arena.errors import ConfigError
from arena.tasks import build_task
from arena.tasks.base import RegressionBatch
from arena.tasks.icl_regression import best_gd_steps, gd_predictions, mse_curve, ridge_predictions


def test_layout_shapes_and_scored_positions():
    task = build_task("icl_regression", d_x=3, d_y=2, n_points=5, noise_std=0.0)
    assert task.seq_len == 10 and task.input_dim == 5 and task.output_dim == 2 and task.kind == "regression"
    batch = task.generate(4, [0, 1], "test")
    assert isinstance(batch, RegressionBatch)
    assert batch.inputs.shape == (4, 10, 5) and batch.targets.shape == (4, 10, 2) and batch.scored.shape == (4, 10)
    assert batch.inputs.dtype == batch.targets.dtype == torch.float32 and batch.scored.dtype == torch.bool
    assert batch.scored[:, 0::2].all() and not batch.scored[:, 1::2].any()  # scored at every x-token only
    x, y = batch.inputs[:, 0::2, :3], batch.inputs[:, 1::2, 3:]
    assert (batch.inputs[:, 0::2, 3:] == 0).all() and (batch.inputs[:, 1::2, :3] == 0).all()  # [x, 0] then [0, y]
    assert torch.equal(batch.targets[:, 0::2], y)  # at x_i, the target is the y_i the next token shows
    assert (batch.targets[:, 1::2] == 0).all()
    # noiseless: one W per sequence explains every pair (5 pairs > d_x = 3 determine it)
    for row in range(4):
        w, *_ = np.linalg.lstsq(x[row].double().numpy(), y[row].double().numpy(), rcond=None)
        assert np.allclose(x[row].double().numpy() @ w, y[row].double().numpy(), atol=1e-5)
    # a fresh W per sequence: another sequence's W does not fit
    w0, *_ = np.linalg.lstsq(x[0].double().numpy(), y[0].double().numpy(), rcond=None)
    assert not np.allclose(x[1].double().numpy() @ w0, y[1].double().numpy(), atol=1e-2)


def test_deterministic_in_seed_and_unit_variance():
    task = build_task("icl_regression", d_x=8, n_points=16, noise_std=0.5)
    a, b, c = task.generate(8, [3, 0]), task.generate(8, [3, 0]), task.generate(8, [4, 0])
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)
    y = task.generate(4000, [5, 1], "test").targets[:, 0::2].double()
    assert abs(y.var().item() - (1 + 0.5 ** 2)) < 0.05  # W x has unit variance, plus the noise's


def test_bad_knobs_fail_in_one_line():
    with pytest.raises(ConfigError, match="seq_len=10 must be 0 .* 2 \\* n_points = 8"):
        build_task("icl_regression", n_points=4, seq_len=10)
    with pytest.raises(ConfigError, match="d_x=0 must be an integer >= 1"):
        build_task("icl_regression", d_x=0)
    with pytest.raises(ConfigError, match="noise_std=-1"):
        build_task("icl_regression", noise_std=-1.0)
    with pytest.raises(ConfigError, match="length 7 must be even"):
        build_task("icl_regression").at_length(7)
    assert build_task("icl_regression", n_points=4).at_length(12).cfg.n_points == 6


def test_ridge_and_least_squares_equal_direct_numpy_solutions():
    task = build_task("icl_regression", d_x=3, d_y=2, n_points=7, noise_std=0.3)
    x, y = task.pairs(task.generate(5, [0, 1], "test"), 3)
    lam = task.ridge
    assert lam == pytest.approx(0.3 ** 2 * 3)
    ridge, least = ridge_predictions(x, y, lam), ridge_predictions(x, y, 0.0)
    for n in range(5):
        assert np.allclose(ridge[n, 0], 0) and np.allclose(least[n, 0], 0)  # no example: predict 0
        for k in range(1, 7):
            w, *_ = np.linalg.lstsq(x[n, :k], y[n, :k], rcond=None)  # min-norm least squares on pairs < k
            assert np.allclose(least[n, k], x[n, k] @ w, atol=1e-8), (n, k)
            # ridge as least squares on the pairs stacked with sqrt(lam) * I rows (targets 0)
            aug_x = np.vstack([x[n, :k], np.sqrt(lam) * np.eye(3)])
            aug_y = np.vstack([y[n, :k], np.zeros((3, 2))])
            w, *_ = np.linalg.lstsq(aug_x, aug_y, rcond=None)
            assert np.allclose(ridge[n, k], x[n, k] @ w, atol=1e-8), (n, k)
    assert np.allclose(mse_curve(least, y), ((least - y) ** 2).mean(axis=(0, 2)))


def test_one_step_gd_is_the_hebbian_sum_with_the_best_step_size():
    task = build_task("icl_regression", d_x=4, d_y=2, n_points=6, noise_std=0.1)
    x, y = task.draw(np.random.default_rng(0), 400)
    steps = best_gd_steps(x, y)
    pred = gd_predictions(x, y, steps)
    # the prediction is eta_k * S x_k with S = sum_{j<k} y_j x_j^T (one GD step on 1/2 sum ||S x_j - y_j||^2 from 0)
    n, k = 3, 4
    hebbian = sum(np.outer(y[n, j], x[n, j]) for j in range(k))
    assert np.allclose(pred[n, k], steps[k] * hebbian @ x[n, k])
    assert steps[0] == 0 and (steps[1:] > 0).all()
    # no other step size does better on the data it was fit on: a brute-force grid around each eta_k
    curve = mse_curve(pred, y)
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert (mse_curve(gd_predictions(x, y, steps * factor), y)[1:] > curve[1:]).all()


def test_closed_form_baselines_on_the_test_split():
    task = build_task("icl_regression", d_x=4, n_points=12, noise_std=0.1, num_test=300)
    test = task.generate(300, [0, 1], "test")
    out = task.closed_form_baselines(test, seed=0)
    curves = {name: np.asarray(c) for name, c in out["curves"].items()}
    assert set(curves) == {"ridge", "least_squares", "one_step_gd", "zero"}
    assert all(len(c) == 12 for c in curves.values())
    # with no example every predictor says 0
    assert np.allclose([c[0] for c in curves.values()], curves["zero"][0])
    assert abs(curves["zero"].mean() - 1.01) < 0.1  # Var(y) = 1 + noise^2
    # Bayes-optimal ridge is best on average, and past k = d_x it is near the noise floor, while one GD step is not
    assert out["mse"]["ridge"] <= min(out["mse"]["least_squares"], out["mse"]["one_step_gd"]) + 1e-9
    assert curves["ridge"][-1] < 0.05 < curves["one_step_gd"][-1]
    assert out["mse"] == pytest.approx({k: c.mean() for k, c in curves.items()})


def test_show_prints_pairs(capsys):
    from arena.tasks.__main__ import main

    assert main(["show", "task=icl_regression", "d_x=2", "n_points=8", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "real vectors in (3) and out (1)" in out and "(0 pairs before it)" in out
    assert "pos   2  x = [" in out and "8 scored positions in all" in out
