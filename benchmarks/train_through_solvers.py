"""Training through the solvers (issue 21): the rnn_forward next-pixel GRU on binarized MNIST
trained for a fixed number of steps by (a) ``torch.nn.GRU`` + autograd, (b) the library's loop +
BPTT, (c) the best parallel forward + parallel backward at tol 0 (picked by a pilot in the same
process) and (d) the same at a forward tolerance; steps interleaved in one process. Writes
``<out>/record.json``, ``<out>/table.md`` (time per step, forward iterations, final bits/pixel,
the loss curve's largest gap to the loop's against the declared tolerance) and
``<out>/loss_vs_time.png`` (loss against training wall-clock, as the paper's RNN figure).
The logic is :mod:`ffsolve.experiments.rnn_forward.training_race`.

    ../shared/tools/quiet-run -- .venv/bin/python benchmarks/train_through_solvers.py \
        --folder ../shared/data --out results/train_through_solvers
    .venv/bin/python benchmarks/train_through_solvers.py --source embedded --quick --out /tmp/race
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from pathlib import Path

from ffsolve.data import load_dataset
from ffsolve.experiments.rnn_forward import training_race
from ffsolve.kit import progress


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = training_race.RaceSettings()
    parser.add_argument("--source", choices=["folder", "embedded"], default="folder",
                        help="MNIST source: the full set (folder) or the shipped test split")
    parser.add_argument("--folder", default="../shared/data", help="folder holding MNIST/raw")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--tol", type=float, default=defaults.tol, help="forward tol of the last variant")
    parser.add_argument("--test-images", type=int, default=defaults.test_images)
    parser.add_argument("--pilot-repeats", type=int, default=defaults.pilot_repeats)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--quick", action="store_true", help="a few steps at batch 2, for a smoke test")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.steps, args.batch, args.test_images, args.pilot_repeats = 3, 2, 8, 1
    data = load_dataset("mnist", args.source, args.folder if args.source == "folder" else None,
                        embedded_dir=Path(__file__).resolve().parents[1] / "workflow" / "resources" / "mnist")
    settings = training_race.RaceSettings(
        steps=args.steps, batch=args.batch, hidden_size=args.hidden_size, lr=args.lr, tol=args.tol,
        test_images=args.test_images, pilot_repeats=args.pilot_repeats, seed=args.seed)
    record = training_race.race(data.train_images, data.test_images, settings, progress=progress)
    record["data_source"] = data.source
    record["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.json").write_text(json.dumps(record, indent=1))
    table = training_race.markdown_table(record)
    (out / "table.md").write_text(table)
    training_race.plot(record, out / "loss_vs_time.png")
    print(f"pilot: {record['pilot']}")
    print(table)
    return record


if __name__ == "__main__":
    main()
