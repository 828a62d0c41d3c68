"""Input batches for the DenseNet experiment, one source per dataset name (the models are in
model.py).

* ``mnist``: the small DenseNet-BC trained by the ``densenet_train`` rule, embedded MNIST test images.
* ``imagenet_val``: DenseNet-201 with torchvision's ImageNet weights (a local file, or torchvision's
  download) on images from an ImageNet validation folder (class sub-folders, torchvision's
  ``ImageFolder`` layout); as in the paper, ToTensor + Normalize only, full resolution, batch 1.
* ``random_speed_only``: the DenseNet-201 architecture with random weights on random inputs. Its
  predictions mean nothing; it exists to time the methods on machines without ImageNet, and its
  dataset name says so in every path, table row and figure title.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ffsolve.data import DataError

log = logging.getLogger(__name__)

DATASETS = ("mnist", "imagenet_val", "random_speed_only")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPEED_ONLY_LABEL = "SPEED ONLY: random weights, random inputs"


def mnist_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` -> normalised float ``(N, 1, 28, 28)``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)
    return (x - MNIST_MEAN) / MNIST_STD


def imagenet_batches(folder: str | None, count: int, seed: int, image_size: int | None):
    """``count`` images (seeded shuffle) as batches of one ``(1, 3, H, W)``, and their labels.

    Labels are the class folders' indices in sorted order, which is ImageNet's class order when
    the folder has the 1,000 synset folders (n01440764, ...); with fewer folders they are only
    reported, not scored.
    """
    if not folder:
        raise DataError(
            "the DenseNet ImageNet run needs validation images: set data.imagenet_val.folder to a "
            "folder with one sub-folder of images per class (torchvision ImageFolder layout)"
        )
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"data.imagenet_val.folder {folder!r} is not a folder")
    from torchvision import datasets, transforms

    steps = []
    if image_size is not None:
        steps += [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    try:
        dataset = datasets.ImageFolder(str(root), transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"data.imagenet_val.folder {folder!r}: {err}") from err
    if len(dataset) < count:
        raise DataError(
            f"data.imagenet_val.folder {folder!r} holds {len(dataset)} images; "
            f"densenet.images asks for {count}"
        )
    order = np.random.default_rng(seed).permutation(len(dataset))[:count]
    batches, labels = [], []
    for index in order:
        image, label = dataset[int(index)]
        batches.append(image.unsqueeze(0))
        labels.append(label)
    scored = len(dataset.classes) == 1000
    return batches, (np.asarray(labels) if scored else None)


def random_batch(count: int, image_size: int, seed: int) -> torch.Tensor:
    """Standard-normal ``(count, 3, size, size)`` inputs from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, image_size, image_size, generator=generator)
