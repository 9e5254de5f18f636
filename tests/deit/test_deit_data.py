"""DeiT data: each source's loader on small local data, seeded augmentation, resumable stream."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from deit.config import AugConfig, DataConfig
from deit.data import Augmented, EpochSampler, TrainStream, build_datasets, build_transforms, train_sampler

SHARED = Path(os.environ.get("SPARSE_CORE_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
CIFAR_NPZ = SHARED / "cifar10_subset" / "cifar10_subset.npz"


def _transforms(img_size=32):
    data = DataConfig(source="digits", img_size=img_size, crop_pct=1.0)
    return build_transforms(data, AugConfig())


def test_imagefolder_in_temp_dir(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    data = build_datasets(DataConfig(source="imagefolder", path=str(tmp_path), img_size=32))
    assert (len(data.train), len(data.val), data.num_classes, data.class_names) == (6, 4, 2, ["cat", "dog"])
    train_tf, eval_tf = _transforms()
    x, y = Augmented(data.train, train_tf)[(0, 0, 0, 4)]
    assert x.shape == (3, 32, 32) and y == 1
    assert Augmented(data.val, eval_tf)[0][0].shape == (3, 32, 32)


def test_imagefolder_missing_val(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="val"):
        build_datasets(DataConfig(source="imagefolder", path=str(tmp_path)))


@pytest.mark.skipif(not CIFAR_NPZ.is_file(), reason="shared/data/cifar10_subset not present")
def test_shared_npz():
    data = build_datasets(DataConfig(source="npz", path=str(CIFAR_NPZ), img_size=32))
    assert (len(data.train), len(data.val), data.num_classes) == (5000, 2000, 10)
    assert data.class_names[0] == "airplane"
    image, label = data.train[0]
    assert image.size == (32, 32) and 0 <= label < 10


def test_npz_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 8, 8, 3), np.float32), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 8, 8, 3), np.uint8), y_test=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="uint8"):
        build_datasets(DataConfig(source="npz", path=str(bad)))
    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="y_train"):
        build_datasets(DataConfig(source="npz", path=str(missing)))


def test_digits_builtin():
    data = build_datasets(DataConfig(source="digits", img_size=32, val_fraction=0.15))
    assert len(data.train) + len(data.val) == 1797 and data.num_classes == 10
    assert abs(len(data.val) - 270) <= 1
    image, label = data.train[0]
    assert image.size == (32, 32) and image.mode == "RGB" and 0 <= label < 10
    again = build_datasets(DataConfig(source="digits", img_size=32, val_fraction=0.15))
    assert np.array_equal(data.train.labels, again.train.labels)  # fixed split


def test_cifar_needs_download_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.download=true"):
        build_datasets(DataConfig(source="cifar10", path=str(tmp_path), download=False))


def test_augmentation_is_a_function_of_the_key():
    data = build_datasets(DataConfig(source="digits", img_size=32))
    train_tf, _ = _transforms()
    ds = Augmented(data.train, train_tf, seed=3)
    torch.manual_seed(0)
    a = ds[(1, 0, 5, 7)][0]
    state = torch.get_rng_state()
    b = ds[(1, 0, 5, 7)][0]
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left as it was
    assert not torch.equal(a, ds[(2, 0, 5, 7)][0])  # next epoch: another augmentation


def test_epoch_sampler_ranks_are_disjoint():
    data = build_datasets(DataConfig(source="digits", img_size=16))
    keys = []
    for rank in range(2):
        sampler = EpochSampler(train_sampler(data.train, rank, 2, seed=0, repeated_aug=False), rank)
        sampler.epoch = 1
        keys.append({k[3] for k in sampler})
    assert not keys[0] & keys[1]
    ra = train_sampler(data.train, 0, 1, seed=0, repeated_aug=True)
    assert type(ra).__name__ == "RepeatAugSampler"


def test_stream_resumes_exactly():
    data = build_datasets(DataConfig(source="digits", img_size=16, val_fraction=0.9))
    train_tf, _ = _transforms(16)

    def stream():
        ds = Augmented(data.train, train_tf, seed=1)
        return TrainStream(ds, train_sampler(data.train, 0, 1, seed=1, repeated_aug=False), batch_size=32, rank=0)

    straight = stream()
    batches = [straight.next() for _ in range(8)]  # 180 images / 32 = 5 batches per epoch: crosses an epoch
    first = stream()
    for _ in range(3):
        first.next()
    resumed = stream()
    resumed.load_state_dict(first.state_dict())
    for x, y in batches[3:]:
        rx, ry = resumed.next()
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert resumed.state_dict() == {"epoch": 1, "batch": 3, "batch_size": 32}
    with pytest.raises(ValueError, match="batch_size"):
        resumed.load_state_dict({"epoch": 0, "batch": 0, "batch_size": 8})
