"""One child process of tests/children.py: ``python tests/threads_child.py EXPERIMENT THREADS OUT.npz``.

Sets the thread count first (``ffsolve.runtime.limit_threads``: PyTorch, MKL, OpenBLAS, and JAX's
pool and flag, which its backend reads when it starts), then measures every candidate of the
experiment's contract instance through the harness, as the workflow does (``ffsolve.kit.measure``,
two timed repeats, each candidate's traced twin checked against its timed program), and saves
each output (``result.x`` of the first timed call, what the harness compares) to OUT.npz as
``contract/<instance>/<run>/<leaf>``. The PyTorch experiments also run their methods once on an
instance of the embedded default's sizes (config/config.yaml, random weights), saved as
``default/...``: the contract instances are too small for PyTorch to split any operation across
threads (it splits element-wise work above 32,768 elements, and MKL small products not at all),
the default's are not. PixelCNN++'s default instance is left out: JAX compiles every method again
at that size, about a minute per process on 2 cores. Prints one JSON line: the thread counts in
force, and under ``contract`` what was measured of each candidate (tests/experiments/test_contract.py checks
it).
"""

import json
import sys

from ffsolve.runtime import limit_threads

IN_FORCE = limit_threads(int(sys.argv[2])) if __name__ == "__main__" else None

import importlib
import os
from pathlib import Path

import numpy as np
import yaml

from ffsolve.kit.harness import to_numpy_leaves

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
SEED = 1234


def contract_outputs(experiment: str) -> tuple[dict, dict]:
    """One instance (a list of candidates), or several ({instance: candidates}), each measured on
    its own against its own sequential reference: the outputs and a summary of each measurement,
    keyed ``<instance>/<run>`` (the instance empty for a list)."""
    from ffsolve.kit import measure

    system = importlib.import_module(f"ffsolve.experiments.{experiment}.system")
    found = system.contract_candidates()
    groups = found if isinstance(found, dict) else {"": found}
    out, summary = {}, {}
    for group, candidates in groups.items():
        for name, m in measure(candidates, repeats=2, warmup=0).items():
            out[f"{group}/{name}"] = m.result.x
            summary[f"{group}/{name}"] = describe(m)
    return out, summary


def describe(m) -> dict:
    """What tests/experiments/test_contract.py checks of a measurement, as JSON."""
    import ffsolve

    result, tolerance = m.result, m.candidate.tolerance
    is_result = isinstance(result, ffsolve.SolveResult)
    return {
        "method": m.candidate.spec.method,
        "solve_result": is_result,
        "tol": float(result.tol) if is_result else None,
        "converged": bool(result.converged) if is_result else None,
        "iterations": int(result.iterations) if is_result else None,
        "sequence_length": int(result.sequence_length) if is_result else None,
        "network_evaluations": float(result.network_evaluations) if is_result else None,
        "bitwise_equal": bool(m.bitwise_equal),
        "within_tolerance": None if m.within_tolerance is None else bool(m.within_tolerance),
        "max_abs_diff": float(m.max_abs_diff),
        "tolerance": None if tolerance is None else {"rule": str(tolerance.rule), "why": str(tolerance.why)},
        "traced": m.candidate.traced is not None,
    }


def default_outputs(experiment: str) -> dict:
    """Every exact method (no auto, no frontier tolerances) at the embedded default's sizes."""
    import torch

    from ffsolve.kit import RunSpec

    config = yaml.safe_load(CONFIG.read_text())[experiment]
    methods = [m for m in config.get("methods", []) if m != "auto"]
    out = {}
    if experiment == "solver_demo":
        import ffsolve
        from ffsolve.experiments.solver_demo.system import make_map
        from ffsolve.solvers import uses_blocks

        f, x0 = make_map(config["length"], config["batch"], config["coupling"], SEED)
        for method in methods:
            for block in (config["block_sizes"] if uses_blocks(method) else [None]):
                out[f"{method}_{block}"] = ffsolve.solve(f, x0, method=method, block_size=block).x
    elif experiment == "made":
        from ffsolve.experiments.made.model import MADE
        from ffsolve.experiments.made.system import (
            candidates,
            logistic_noise,
            run_specs,
        )

        torch.manual_seed(SEED)
        model = MADE(784, config["hidden_sizes"]).eval()
        noise = logistic_noise(config["sample"]["batch"], 784, SEED)
        for c in candidates(model, noise, config["logit_lambda"], run_specs(methods, config["block_sizes"])):
            out[c.name] = c.program().x
    elif experiment == "densenet":
        from ffsolve.experiments.densenet.model import DenseNet
        from ffsolve.experiments.densenet.system import (
            LayerSystem,
            float32_everywhere,
            randomised_batch_norm,
            solve_batches,
        )

        float32_everywhere()
        torch.manual_seed(SEED)
        kwargs = {**config["model"], "block_config": tuple(config["model"]["block_config"]),
                  "num_classes": 10, "in_channels": 1, "stem": "small"}
        model = randomised_batch_norm(DenseNet(**kwargs), seed=SEED).eval()
        batches = [torch.randn(config["images"], 1, 28, 28, generator=torch.Generator().manual_seed(SEED))]
        for method in methods:
            if method == "jacobi_top5":
                continue  # jacobi, stopped early by a rule on its top-5 lists: the same steps
            for block in (config["block_sizes"] if method == "gs_jacobi" else [None]):
                out[f"{method}_{block}"] = solve_batches(LayerSystem(model, block), method, batches).x
    elif experiment == "rnn_backprop":
        from ffsolve.experiments.rnn_backprop.model import forward, init_params
        from ffsolve.experiments.rnn_backprop.system import (
            SCANS,
            adjoint_system,
            solve_adjoints,
        )

        generator = torch.Generator().manual_seed(SEED)
        params = init_params(config["hidden_size"], 0.1, generator)
        x = torch.rand(config["image_size"] ** 2, 1, 1, generator=generator)
        system = adjoint_system(params, forward(params, x))
        for method in ("sequential", "jacobi", *SCANS):
            out[method] = solve_adjoints(system, RunSpec(method)).x
    elif experiment == "rnn_forward":
        from ffsolve.experiments.rnn_forward.cases import parse_case, random_case_arrays
        from ffsolve.experiments.rnn_forward.system import candidates

        for name in config["datasets"]:
            case = parse_case(name, config["hidden_size"])
            weights, inputs = random_case_arrays(case, batch=config["batch"], input_size=config["input_size"],
                                                 seed=SEED, radius=config["softplus_radius"])
            for c in candidates(case, weights, inputs, methods, damping=config["damping"]):
                out[f"{name}/{c.name}"] = c.program().x
    elif experiment == "speculative":
        # The GRU source at the default's size (H 16, 784 positions), untrained (the checkpoint is
        # a DAG output), 8 rows: every method on the same seed and noise table.
        from ffsolve.experiments.rnn_forward.autoregressive import NextPixelDistributions
        from ffsolve.experiments.rnn_forward.model import NextPixelGRU
        from ffsolve.experiments.speculative.system import gumbel_table, sample

        torch.manual_seed(SEED)
        model = NextPixelDistributions(NextPixelGRU(yaml.safe_load(CONFIG.read_text())["rnn_forward"]["hidden_size"]))
        noise = gumbel_table(model, 8, SEED)
        for method in methods:
            out[method] = sample(model, method, rows=8, seed=SEED, noise=noise).x
    return out


def main(experiment: str, threads: int, path: str) -> None:
    contract, summary = contract_outputs(experiment)
    outputs = {f"contract/{key}": x for key, x in contract.items()}
    if experiment != "pixelcnnpp":
        outputs.update({f"default/{key}": x for key, x in default_outputs(experiment).items()})
    arrays = {f"{key}/{i}": leaf for key, x in outputs.items() for i, leaf in enumerate(to_numpy_leaves(x))}
    np.savez(path, **arrays)
    import torch

    print(json.dumps({"in_force": IN_FORCE, "torch": torch.get_num_threads(),
                      "nproc": os.environ.get("NPROC"), "xla_flags": os.environ.get("XLA_FLAGS", ""),
                      "contract": summary}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
