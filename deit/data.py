"""Image data for the DeiT recipe: four sources, timm's transforms, and a resumable train stream.

Sources (`data.source`): 'imagefolder' (root/train + root/val class folders, e.g. ImageNet),
'cifar10'/'cifar100' (torchvision; downloaded only with data.download=true), 'npz' (uint8 arrays
x_train/y_train/x_test/y_test, optional class_names) and 'digits' (scikit-learn's bundled 8x8 digits,
upsampled; no download, for CPU demos and tests).

Exact resume: the train order is a function of (seed, epoch) and every sample's augmentation is drawn
from generators seeded by (seed, epoch, rank, slot in the epoch), so the stream continues bit for bit
from (epoch, batch), whatever the number of loader workers.
"""

from __future__ import annotations

import random
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

import deit._torchvision_compat  # noqa: F401  (before torchvision/timm)
from deit.config import AugConfig, DataConfig

__all__ = [
    "ArrayImages", "ImageData", "build_datasets", "build_transforms", "Augmented", "EpochSampler",
    "TrainStream", "train_sampler", "eval_loader", "load_npz", "load_digits",
]


class ArrayImages(Dataset):
    """uint8 images (N, H, W, 3) or (N, H, W) with int labels, served as (PIL RGB image, label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
            raise ValueError(f"images must be uint8 (N, H, W, 3) or (N, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be 1-D with one label per image ({len(images)}), got shape {labels.shape}")
        self.images, self.labels = images, labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(self.images[i]).convert("RGB"), int(self.labels[i])


@dataclass
class ImageData:
    train: Dataset  # items (PIL image, label), no transform yet
    val: Dataset
    num_classes: int
    class_names: list[str]


def _check_labels(name: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")


def load_npz(path: str | Path) -> ImageData:
    """The `.npz` format of shared/data/cifar10_subset: x_train, y_train, x_test, y_test (+ class_names)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path {str(path)!r} is not a file (expected an .npz)")
    unreadable = f"{path} is not a readable .npz of uint8 arrays x_train, y_train, x_test, y_test"
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError(f"{unreadable} (it holds a single array)")
        with f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)}; it has {f.files}")
            arrays = {k: f[k] for k in f.files}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{unreadable} ({type(e).__name__}: {e})") from e
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) == 0:
            raise ValueError(f"{path}: x_{split} holds no images")
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else []
    num_classes = len(names) or int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    for split in ("y_train", "y_test"):
        _check_labels(f"{path}:{split}", arrays[split], num_classes)
    names = names or [str(i) for i in range(num_classes)]
    try:
        return ImageData(ArrayImages(arrays["x_train"], arrays["y_train"]),
                         ArrayImages(arrays["x_test"], arrays["y_test"]), num_classes, names)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def load_digits(img_size: int, val_fraction: float) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), upsampled to img_size, fixed split."""
    from PIL import Image
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    small = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), values 0..16 -> 0..255
    big = np.stack([np.asarray(Image.fromarray(im).resize((img_size, img_size), Image.BILINEAR)) for im in small])
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))  # the split never depends on the run's seed
    n_val = int(round(val_fraction * len(labels)))
    val, train = order[:n_val], order[n_val:]
    return ImageData(ArrayImages(big[train], labels[train]), ArrayImages(big[val], labels[val]), 10,
                     [str(i) for i in range(10)])


def _load_imagefolder(root: Path) -> ImageData:
    from torchvision.datasets import ImageFolder

    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"data.path {str(root)!r} needs {split}/<class>/<image> folders; "
                                    f"{str(root / split)!r} is missing")
    try:
        train, val = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
    except FileNotFoundError as e:  # no class folders, or class folders without images
        raise FileNotFoundError(f"data.path {str(root)!r}: train/ and val/ need <class>/<image> folders with "
                                f"images in them: {e}") from e
    if train.class_to_idx != val.class_to_idx:
        raise ValueError(f"{root}: train/ and val/ have different class folders: "
                         f"{sorted(set(train.classes) ^ set(val.classes))}")
    return ImageData(train, val, len(train.classes), list(train.classes))


def _load_cifar(name: str, root: Path, download: bool) -> ImageData:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=download)
        val = cls(str(root), train=False, download=download)
    except RuntimeError as e:
        raise FileNotFoundError(f"{name} not found under {str(root)!r} ({e}); "
                                "set data.download=true to fetch it") from e
    return ImageData(train, val, len(train.classes), list(train.classes))


def build_datasets(cfg: DataConfig) -> ImageData:
    """The untransformed train and val sets of `cfg.source`."""
    if cfg.source == "digits":
        return load_digits(cfg.img_size, cfg.val_fraction)
    if cfg.source == "npz":
        return load_npz(cfg.path)
    if cfg.source == "imagefolder":
        return _load_imagefolder(Path(cfg.path).expanduser())
    if cfg.source in ("cifar10", "cifar100"):
        return _load_cifar(cfg.source, Path(cfg.path or "data").expanduser(), cfg.download)
    raise ValueError(f"unknown data.source {cfg.source!r}")


def build_transforms(data: DataConfig, aug: AugConfig) -> tuple[Callable, Callable]:
    """(train, eval) transforms from timm's `create_transform`: DeiT's RandAugment + erasing, resize/crop."""
    from timm.data import create_transform

    train = create_transform(
        data.img_size, is_training=True, scale=(aug.scale_min, 1.0), hflip=aug.hflip,
        color_jitter=aug.color_jitter, auto_augment=aug.auto_augment, interpolation=aug.interpolation,
        re_prob=aug.re_prob, re_mode=aug.re_mode, re_count=1,
    )
    evaluate = create_transform(data.img_size, is_training=False, interpolation=aug.interpolation,
                                crop_pct=data.crop_pct)
    return train, evaluate


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run the block with python/numpy/torch-CPU global generators seeded by `seed`, then restore them."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators are left alone
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class Augmented(Dataset):
    """`base` with `transform` applied; a key (epoch, rank, slot, index) seeds the augmentation."""

    def __init__(self, base: Dataset, transform: Callable, seed: int = 0) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int, int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            epoch, rank, slot, index = key
            seed = int(np.random.SeedSequence([self.seed, epoch, rank, slot]).generate_state(2, np.uint64)[0])
            image, label = self.base[index]
            with _seeded(seed):
                return self.transform(image), label
        image, label = self.base[key]
        return self.transform(image), label


class EpochSampler(Sampler):
    """Wraps a sampler with `set_epoch` (DistributedSampler, timm's RepeatAugSampler): yields keys
    (epoch, rank, slot, index) of one epoch, starting at slot `start`."""

    def __init__(self, base: Any, rank: int) -> None:
        if not callable(getattr(base, "set_epoch", None)):
            raise TypeError(f"EpochSampler needs a sampler with set_epoch(), got {type(base).__name__}")
        self.base, self.rank = base, rank
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(self.base) - self.start

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        self.base.set_epoch(self.epoch)
        for slot, index in enumerate(self.base):
            if slot >= self.start:
                yield self.epoch, self.rank, slot, int(index)


class TrainStream:
    """Endless batches of the train set; Stateful position (epoch, batch within the epoch)."""

    def __init__(self, dataset: Augmented, base_sampler: Any, batch_size: int, rank: int, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.sampler = EpochSampler(base_sampler, rank)
        self.batch_size = batch_size
        self.batches_per_epoch = len(base_sampler) // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"the train set gives {len(base_sampler)} samples per rank, fewer than one batch "
                             f"of {batch_size}; lower batch_size")
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers, drop_last=True,
            pin_memory=pin_memory, persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(0),  # keeps the loader off the global torch RNG
        )
        self.epoch, self.batch = 0, 0
        self._iter: Iterator | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (images, labels) batch; moves to the next epoch when this one is used up."""
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self.sampler.epoch, self.sampler.start = self.epoch, self.batch * self.batch_size
            self._iter = iter(self.loader)
        images, labels = next(self._iter)
        self.batch += 1
        return images, labels

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["batch_size"]) != self.batch_size:
            raise ValueError(f"checkpoint's data position is for batch_size {state['batch_size']}, "
                             f"this run has {self.batch_size}")
        self.epoch, self.batch, self._iter = int(state["epoch"]), int(state["batch"]), None


def train_sampler(dataset: Dataset, rank: int, world_size: int, seed: int, repeated_aug: bool) -> Any:
    """DistributedSampler (shuffled by seed + epoch), or timm's RepeatAugSampler (3 repeats, order by epoch only)."""
    if repeated_aug:
        from timm.data.distributed_sampler import RepeatAugSampler

        return RepeatAugSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True)
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)


def eval_loader(dataset: Dataset, batch_size: int, rank: int, world_size: int, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """This rank's share (every world_size-th sample, no padding) of an eval set, in order."""
    shard = Subset(dataset, list(range(rank, len(dataset), world_size)))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0))  # keeps the loader off the global torch RNG
