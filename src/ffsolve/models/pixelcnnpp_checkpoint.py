"""PixelCNN++ checkpoints: Flax msgpack holding the parameters and the architecture they fit.

Storing the architecture next to the weights lets a loader refuse a checkpoint that does not match
the configured model with a message naming the keys, instead of failing deep inside Flax.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import serialization

from ffsolve.models.pixelcnnpp import PixelCNNPP

ARCHITECTURE_KEYS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "height", "width", "channels")


def architecture(model: PixelCNNPP, shape: tuple[int, int, int]) -> dict:
    """The settings a checkpoint must agree with: model sizes and image shape (H, W, C)."""
    h, w, c = shape
    return {"nr_resnet": model.nr_resnet, "nr_filters": model.nr_filters,
            "nr_logistic_mix": model.nr_logistic_mix, "height": h, "width": w, "channels": c}


def save_checkpoint(path: str | os.PathLike, params, arch: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = serialization.msgpack_serialize(
        {"architecture": dict(arch), "params": serialization.to_state_dict(params)}
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, model: PixelCNNPP, shape: tuple[int, int, int]):
    """Parameters from ``path`` for ``model`` on images of ``shape``; a clear error on mismatch."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"PixelCNN++ checkpoint {path} does not exist: train one (rule pixelcnnpp_train) or set "
            "pixelcnnpp.settings.<dataset>.checkpoint to an existing file"
        )
    try:
        stored = serialization.msgpack_restore(path.read_bytes())
        found = {k: int(v) for k, v in stored["architecture"].items()}
        raw = stored["params"]
    except Exception as err:  # noqa: BLE001 - any parse failure means "not one of ours"
        raise ValueError(
            f"{path} is not an ffsolve PixelCNN++ checkpoint (msgpack with 'architecture' and "
            f"'params'): {err}"
        ) from None
    wanted = architecture(model, shape)
    wrong = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
    if wrong:
        details = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in wrong.items())
        raise ValueError(
            f"checkpoint {path} does not fit the configured model ({details}); set "
            "pixelcnnpp.settings.<dataset> to the checkpoint's values or train a new one"
        )
    template = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(shape)))["params"]
    return serialization.from_state_dict(template, raw)
