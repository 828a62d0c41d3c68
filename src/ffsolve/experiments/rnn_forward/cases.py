"""The cases of the rnn_forward experiment, free of torch and JAX (the rules import this).

A case is one measure job: one cell, one sequence length T, one hidden size H, one framework, on
fixed weights and inputs; its name is the ``dataset`` of its records.

* ``mnist``: the GRU trained on next-pixel prediction of binarized MNIST in raster order
  (T = 784, H = ``hidden_size``), run on the first ``batch`` test images, in PyTorch.
* ``<cell>_T<T>_H<H>`` (``gru_T1000_H8``, ``softplus_T10000_H32``): random weights
  (:func:`random_weights`) and standard-normal inputs of ``input_size`` features, in PyTorch;
  with the suffix ``_jax`` (``gru_T1000_H8_jax``) the same weights and inputs in JAX.

Random weights and inputs are drawn with NumPy from named seed streams, so the torch and the JAX
case of one (cell, T, H) hold the same numbers bit for bit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ffsolve.kit import RunSpec, expand_runs, numpy_rng

CELLS = ("gru", "softplus")
FRAMEWORKS = ("torch", "jax")
MNIST_LENGTH = 784
CASE_PATTERN = r"mnist|(?:gru|softplus)_T[1-9][0-9]*_H[1-9][0-9]*(?:_jax)?"
_CASE = re.compile(rf"^(?:{CASE_PATTERN})$")
_RANDOM = re.compile(r"^(?P<cell>gru|softplus)_T(?P<T>[1-9][0-9]*)_H(?P<H>[1-9][0-9]*)(?P<jax>_jax)?$")
# The order of the arrays each cell constructor of ffsolve.recurrence.cells takes.
WEIGHT_NAMES = {
    "gru": ("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
    "softplus": ("W", "U", "b"),
}
SEQUENTIAL = "sequential"


@dataclass(frozen=True)
class Case:
    name: str
    cell: str
    length: int
    hidden: int
    framework: str = "torch"

    @property
    def trained(self) -> bool:
        return self.name == "mnist"


def parse_case(name: str, hidden_size: int = 16) -> Case:
    """The case a dataset name stands for (``hidden_size`` is the trained GRU's, for ``mnist``)."""
    if not _CASE.match(name):
        raise ValueError(
            f"rnn_forward.datasets: {name!r} is not a case; write mnist or <cell>_T<length>_H<hidden>"
            f"[_jax] with cell one of {CELLS} (e.g. gru_T1000_H8, gru_T1000_H8_jax)"
        )
    if name == "mnist":
        return Case(name, "gru", MNIST_LENGTH, int(hidden_size))
    match = _RANDOM.match(name)
    return Case(name, match["cell"], int(match["T"]), int(match["H"]), "jax" if match["jax"] else "torch")


def configured_runs(methods, frontier_tols=()) -> list[RunSpec]:
    """Every method once exactly (tol 0), and each parallel method again at each tol > 0."""
    return expand_runs(methods, tols=frontier_tols)


def run_names(methods, frontier_tols=()) -> list[str]:
    return [spec.name for spec in configured_runs(methods, frontier_tols)]


def random_weights(cell: str, hidden: int, inputs: int, seed: int, radius: float = 0.9) -> dict[str, np.ndarray]:
    """float32 weights of a random ``cell`` with ``hidden`` units reading ``inputs`` features.

    GRU: every entry U(-k, k), k = 1/sqrt(hidden), torch.nn.GRU's own initialisation (DEER's demo
    runs an untrained GRU so). softplus: W Gaussian rescaled to spectral norm ``radius`` < 1 (with
    softplus' slope below 1 the map is a contraction in s), U ~ N(0, 1/inputs), b ~ N(0, 0.1²).
    """
    if cell == "gru":
        from ffsolve.recurrence.cells import random_gru_weights

        return dict(zip(WEIGHT_NAMES["gru"], random_gru_weights(hidden, inputs, seed=seed)))
    rng = np.random.default_rng(seed)
    if cell == "softplus":
        if not 0.0 < radius < 1.0:
            raise ValueError(f"rnn_forward.softplus_radius must be in (0, 1) for a contraction, got {radius!r}")
        w = rng.standard_normal((hidden, hidden))
        w *= radius / np.linalg.norm(w, 2)
        return {
            "W": w.astype(np.float32),
            "U": (rng.standard_normal((hidden, inputs)) / np.sqrt(inputs)).astype(np.float32),
            "b": (0.1 * rng.standard_normal(hidden)).astype(np.float32),
        }
    raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS}")


def random_case_arrays(case: Case, *, batch: int, input_size: int, seed: int,
                       radius: float = 0.9) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Weights and ``(T, batch, input_size)`` float32 N(0, 1) inputs of a random case.

    The seed streams name the cell, T and H but not the framework, so ``gru_T1000_H8`` and
    ``gru_T1000_H8_jax`` get the same numbers.
    """
    key = f"{case.cell}_T{case.length}_H{case.hidden}"
    weights = random_weights(case.cell, case.hidden, input_size,
                             int(numpy_rng(seed, "rnn_forward", key, "weights").integers(2**32)), radius)
    inputs = numpy_rng(seed, "rnn_forward", key, "inputs").standard_normal(
        (case.length, batch, input_size)).astype(np.float32)
    return weights, inputs


# A pixel is "on" above this uint8 value (binarized MNIST: 0/1 pixels, bits per pixel well defined).
PIXEL_THRESHOLD = 127


def pixel_sequences(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(N, 28, 28)`` -> next-pixel ``(inputs, targets)`` in raster order, time-major.

    ``targets (784, N)`` are the binarized pixels (1.0 above :data:`PIXEL_THRESHOLD`, else 0.0);
    ``inputs (784, N, 1)`` are the same shifted by one step, ``u_t = x_{t-1}`` with ``u_0 = 0``, so
    the state after reading ``u_t`` has seen pixels 0..t-1 and predicts pixel t. float32.
    """
    targets = np.ascontiguousarray((images.reshape(len(images), -1) > PIXEL_THRESHOLD).astype(np.float32).T)
    inputs = np.zeros_like(targets)
    inputs[1:] = targets[:-1]
    return inputs[:, :, None], targets


def baseline_bits_per_pixel(train_images: np.ndarray, test_images: np.ndarray) -> dict[str, float]:
    """Bits per pixel on ``test_images`` of two predictors fitted to ``train_images`` without a
    network: ``constant`` (one on-probability for every pixel) and ``pixel_marginal`` (each of the
    784 positions its own on-probability, add-one smoothed)."""
    _, train = pixel_sequences(train_images)
    _, test = pixel_sequences(test_images)
    train, test = train.astype(np.float64), test.astype(np.float64)
    n = train.shape[1]

    def bits(p):
        return float(-np.mean(test * np.log2(p) + (1.0 - test) * np.log2(1.0 - p)))

    return {
        "constant": bits(np.full((1, 1), (train.sum() + 1.0) / (train.size + 2.0))),
        "pixel_marginal": bits((train.sum(axis=1, keepdims=True) + 1.0) / (n + 2.0)),
    }
