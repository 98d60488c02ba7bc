"""In-context linear regression: fit a fresh linear map from the pairs seen so far (Garg et al. 2022; arena issue 14.4).

The test-time-training view of a linear mixer: with keys x and values y, the delta rule is online gradient descent
on ||S x - y||^2 and plain (gated) linear attention is the Hebbian sum S = sum_j y_j x_j^T, i.e. one step of
gradient descent from S = 0. This probe measures how close a trained model comes to the optimal learner.
Run it with `python -m arena.run task=icl_regression mixer=gdn` or the study `+experiment=icl_regression`
(docs/probes.md#icl_regression).

Per sequence a fresh W [d_y, d_x] with entries N(0, 1/d_x) (so W x has unit variance per component), points
x_i ~ N(0, I_{d_x}) and y_i = W x_i + noise_std * N(0, I_{d_y}), i = 1..n_points. As in Garg et al., the model reads
real vectors of d_x + d_y numbers, two tokens per pair, `[x_i, 0]` then `[0, y_i]`, and at each x-token must predict
y_i from the earlier pairs (teacher forcing: y_i follows as the next token). So T = 2 * n_points, the scored positions
are the even ones, and the i-th scored position (1-based) has i - 1 examples in context.

Example (d_x = 2, d_y = 1, n_points = 3), one sequence:

    position:  0            1           2            3          4             5
    inputs  :  [.3 -1.2 0]  [0 0 .71]   [1.1 .4 0]   [0 0 -.2]  [-.6 .9 0]    [0 0 .05]
    targets :  [.71]        .           [-.2]        .          [.05]         .        (. = unscored)

Batches are `RegressionBatch` (arena/tasks/base.py): inputs [N, T, d_x + d_y] and targets [N, T, d_y] float32, scored
[N, T] bool. The model reads them with a linear read-in and out (arena/model.py); the loss and the metric are the
mean squared error per output component (normalised by d_y), and the MSE curve over the number of in-context
examples k = 0..n_points - 1 is recorded beside the closed-form baselines of `closed_form_baselines` (computed on
the same test sequences): ridge at the Bayes-optimal strength, minimum-norm least squares, one step of gradient
descent from 0 with the best step size for each k, and the zero predictor.

Defaults: d_x = 8 and n_points = 32, so the curve passes the interpolation threshold k = d_x with room after it;
d_y = 1 (scalar y) as in Garg et al. and the GD-as-ICL papers, which keeps curves comparable, and because the rows of
W are independent given the x's, a larger d_y adds no statistical difficulty, only d_y times more state to hold (the
knob exists to probe that capacity); noise_std = 0.1, so least squares (whose error peaks at k = d_x) and the
Bayes-optimal ridge differ, while the optimal error still drops about a hundredfold past k = d_x.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from arena.errors import ConfigError
from arena.tasks import register_task
from arena.tasks.base import RegressionBatch, Task

# the seed stream of the sequences the one-step-GD step sizes are fit on: apart from the splits (0, 1, 2) and the
# fresh training batches (3) of arena/tasks/base.py and arena/batches.py, so the step size never sees test data
FIT_STREAM = 4


@register_task("icl_regression")
class IclRegression(Task):
    """Pairs (x_i, W x_i + noise) of a fresh W per sequence; predict y_i at x_i from the pairs before it."""

    kind = "regression"

    @dataclass
    class Config(Task.Config):
        seq_len: int = 0  # 0 = 2 * n_points (two tokens per pair); any other value must equal that
        vocab_size: int = 0  # unused: the inputs are real vectors, not token ids
        num_train: int = 0  # 0 = a fresh W for every training sequence (Garg et al.); > 0 a fixed set
        num_test: int = 1_000
        d_x: int = 8  # dimension of x (Garg et al.: 20)
        d_y: int = 1  # dimension of y (Garg et al.: 1)
        n_points: int = 32  # in-context pairs per sequence (Garg et al.: 2 * d_x + 1 = 41)
        noise_std: float = 0.1  # std of the Gaussian noise added to each component of W x (unit variance)

    def __init__(self, cfg: Config):
        for key in ("d_x", "d_y", "n_points"):
            value = getattr(cfg, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"task icl_regression: {key}={value!r} must be an integer >= 1")
        if isinstance(cfg.noise_std, bool) or not isinstance(cfg.noise_std, (int, float)) \
                or not 0 <= cfg.noise_std < float("inf"):
            raise ConfigError(f"task icl_regression: noise_std={cfg.noise_std!r} must be a finite number >= 0")
        if cfg.seq_len not in (0, 2 * cfg.n_points):
            raise ConfigError(f"task icl_regression: seq_len={cfg.seq_len} must be 0 (auto) or 2 * n_points = "
                              f"{2 * cfg.n_points} (two tokens per pair); set n_points instead")
        super().__init__(dataclasses.replace(cfg, seq_len=2 * cfg.n_points))

    @property
    def input_dim(self) -> int:
        return self.cfg.d_x + self.cfg.d_y

    @property
    def output_dim(self) -> int:
        return self.cfg.d_y

    @property
    def ridge(self) -> float:
        """The Bayes-optimal ridge strength: noise variance over the prior variance of W's entries (1 / d_x)."""
        return self.cfg.noise_std ** 2 * self.cfg.d_x

    def auto_settings(self) -> dict[str, object]:
        return {"seq_len": 2 * self.cfg.n_points}

    def at_length(self, seq_len: int) -> Task:
        if seq_len < 2 or seq_len % 2:
            raise ConfigError(f"task icl_regression: length {seq_len} must be even and >= 2 (two tokens per pair)")
        return type(self)(dataclasses.replace(self.cfg, n_points=seq_len // 2, seq_len=0))

    def draw(self, rng: np.random.Generator, num_examples: int) -> tuple[np.ndarray, np.ndarray]:
        """x [N, n_points, d_x] and y [N, n_points, d_y] (float64) of `num_examples` fresh maps W."""
        c = self.cfg
        w = rng.standard_normal((num_examples, c.d_y, c.d_x)) / np.sqrt(c.d_x)  # [N, d_y, d_x]
        x = rng.standard_normal((num_examples, c.n_points, c.d_x))
        y = x @ w.transpose(0, 2, 1) + c.noise_std * rng.standard_normal((num_examples, c.n_points, c.d_y))
        return x, y

    def sample(self, rng: np.random.Generator, num_examples: int, split: str) -> RegressionBatch:
        c = self.cfg
        x, y = self.draw(rng, num_examples)
        inputs = np.zeros((num_examples, 2 * c.n_points, c.d_x + c.d_y), dtype=np.float32)
        inputs[:, 0::2, : c.d_x] = x  # [x_i, 0] at even positions
        inputs[:, 1::2, c.d_x:] = y  # [0, y_i] at odd positions
        targets = np.zeros((num_examples, 2 * c.n_points, c.d_y), dtype=np.float32)
        targets[:, 0::2] = y  # predict y_i while reading x_i
        scored = np.zeros((num_examples, 2 * c.n_points), dtype=bool)
        scored[:, 0::2] = True
        return RegressionBatch(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(scored))

    @staticmethod
    def pairs(batch: RegressionBatch, d_x: int) -> tuple[np.ndarray, np.ndarray]:
        """x [N, n, d_x] and y [N, n, d_y] (float64) read back from a batch of this task."""
        x = batch.inputs[:, 0::2, :d_x].double().cpu().numpy()
        y = batch.targets[:, 0::2].double().cpu().numpy()
        return x, y

    def closed_form_baselines(self, test: RegressionBatch, seed: int) -> dict:
        """MSE (per component of y) of the closed-form predictors on the test sequences, at each number of
        in-context examples k = 0..n_points - 1 (`curves`) and averaged over k (`mse`); the one-step-GD step sizes
        (`gd_step_sizes`, one per k) are fit on fresh training-distribution sequences, never on `test`."""
        x, y = self.pairs(test, self.cfg.d_x)
        fit_x, fit_y = self.draw(np.random.default_rng([seed, FIT_STREAM]), max(len(test), 1000))
        steps = best_gd_steps(fit_x, fit_y)
        curves = {
            "ridge": mse_curve(ridge_predictions(x, y, self.ridge), y),
            "least_squares": mse_curve(ridge_predictions(x, y, 0.0), y),
            "one_step_gd": mse_curve(gd_predictions(x, y, steps), y),
            "zero": mse_curve(np.zeros_like(y), y),
        }
        return {"curves": {name: curve.tolist() for name, curve in curves.items()},
                "mse": {name: float(curve.mean()) for name, curve in curves.items()},
                "gd_step_sizes": steps.tolist(), "ridge_lambda": self.ridge}


def mse_curve(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[n] mean over sequences of ||pred_k - y_k||^2 / d_y, for pred, y [N, n, d_y]."""
    return ((pred - y) ** 2).mean(axis=(0, 2))


def ridge_predictions(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """[N, n, d_y]: y_k predicted from pairs 0..k-1 by ridge regression of strength `lam` (the posterior mean of W
    when lam = noise variance / prior variance); lam = 0 is minimum-norm least squares (the pseudo-inverse, which
    is also the noiseless posterior mean). k = 0 predicts 0."""
    N, n, d_x = x.shape
    pred = np.zeros_like(y)
    for k in range(1, n):
        xs, ys = x[:, :k], y[:, :k]  # [N, k, d_x], [N, k, d_y]
        if lam > 0:
            gram = xs.transpose(0, 2, 1) @ xs + lam * np.eye(d_x)  # [N, d_x, d_x]
            w_t = np.linalg.solve(gram, xs.transpose(0, 2, 1) @ ys)  # [N, d_x, d_y] = W^T
        else:
            w_t = np.linalg.pinv(xs) @ ys  # [N, d_x, k] @ [N, k, d_y]
        pred[:, k] = (x[:, k, None, :] @ w_t)[:, 0]
    return pred


def gd_directions(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[N, n, d_y]: g_k = sum_{j<k} y_j (x_j . x_k), the prediction at x_k of S = sum_{j<k} y_j x_j^T, which is minus
    the gradient of 1/2 sum_{j<k} ||S x_j - y_j||^2 at S = 0: one GD step of size eta predicts eta * g_k."""
    dots = x @ x.transpose(0, 2, 1)  # [N, n, n]: x_k . x_j
    causal = np.tril(np.ones(dots.shape[1:]), k=-1)  # j < k only
    return (dots * causal) @ y


def best_gd_steps(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[n] the step size eta_k minimising the mean squared error of eta_k * g_k on (x, y): the prediction is linear
    in eta, so eta_k = sum <g_k, y_k> / sum ||g_k||^2 (0 at k = 0, where g = 0)."""
    g = gd_directions(x, y)
    num, den = (g * y).sum(axis=(0, 2)), (g * g).sum(axis=(0, 2))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def gd_predictions(x: np.ndarray, y: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """[N, n, d_y]: one GD step from S = 0 with step size steps[k] at each k."""
    return gd_directions(x, y) * steps[None, :, None]
