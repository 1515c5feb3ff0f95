"""Dataset loaders, forget/remain splits and the dataset registry, on tiny files the tests write."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unlearn.data import SPLIT_NAMES, ClassificationData, load_dataset, split_by_class
from unlearn.data.cifar import load_cifar
from unlearn.data.digits import load_digits
from unlearn.data.generated import CLASS_NAMES, _draw_class, load_shapes
from unlearn.data.imagefolder import load_imagefolder
from unlearn.errors import UnlearnError

# --- digits ---------------------------------------------------------------------------------------


def test_digits_are_8x8_images_in_unit_range_with_a_stratified_split():
    data = load_digits()
    assert data.name == "digits" and data.num_classes == 10 and data.input_shape == (1, 8, 8)
    assert data.train.x.shape == (1347, 1, 8, 8) and data.test.x.shape == (450, 1, 8, 8)
    assert data.train.x.dtype == torch.float32
    assert data.train.x.min() >= 0 and data.train.x.max() <= 1
    assert data.test.targets.bincount().min() >= 40  # every digit well represented in test


def test_digits_split_depends_only_on_the_seed():
    first, again, other = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert torch.equal(first.test.x, again.test.x)
    assert not torch.equal(first.test.x, other.test.x)


def test_digits_reject_a_test_fraction_outside_0_1():
    with pytest.raises(UnlearnError, match="test_fraction"):
        load_digits(test_fraction=1.5)


# --- generated shapes -----------------------------------------------------------------------------


def small_shapes(seed: int = 0) -> ClassificationData:
    return load_shapes(num_train=200, num_test=100, seed=seed)


def test_shapes_are_balanced_standardised_rgb_images():
    data = small_shapes()
    assert data.name == "shapes" and data.class_names == CLASS_NAMES and data.input_shape == (3, 32, 32)
    assert data.train.x.shape == (200, 3, 32, 32) and data.train.x.dtype == torch.float32
    assert data.train.targets.dtype == torch.long
    assert data.train.targets.bincount().tolist() == [20] * 10
    assert data.test.targets.bincount().tolist() == [10] * 10
    channel_mean = data.train.x.mean(dim=(0, 2, 3))
    channel_std = data.train.x.std(dim=(0, 2, 3))
    assert torch.allclose(channel_mean, torch.zeros(3), atol=1e-4)
    assert torch.allclose(channel_std, torch.ones(3), atol=1e-4)


def test_shapes_are_deterministic_per_seed_and_differ_across_seeds():
    first, again, other = small_shapes(0), small_shapes(0), small_shapes(1)
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.x, again.test.x)
    assert not torch.equal(first.train.x, other.train.x)


def test_shapes_train_and_test_come_from_different_streams():
    data = small_shapes()
    assert not torch.equal(data.train.x[:100], data.test.x)
    assert not torch.equal(data.train.targets[:100], data.test.targets)


def test_shapes_default_size_generates_all_6000_images():
    data = load_shapes()  # about a second on two cores: a regression here shows as a slow suite
    assert len(data.train) == 5000 and len(data.test) == 1000
    assert torch.isfinite(data.train.x).all()


def test_shapes_vary_place_and_size_within_a_class():
    """Regression: one draw shared by a whole class let a CNN memorise the class's layout."""
    grid = np.meshgrid(np.arange(32, dtype=np.float32), np.arange(32, dtype=np.float32), indexing="ij")
    _, geometry = _draw_class("star", 20, grid[0][None], grid[1][None], 32, np.random.default_rng(0))
    assert len(np.unique(geometry, axis=0)) == 20


def test_shapes_scale_to_other_image_sizes():
    data = load_shapes(num_train=20, num_test=10, image_size=48)
    assert data.train.x.shape == (20, 3, 48, 48) and data.input_shape == (3, 48, 48)


def test_shapes_reject_fewer_samples_than_classes():
    with pytest.raises(UnlearnError, match="num_test=5"):
        load_shapes(num_train=100, num_test=5)


# --- CIFAR ----------------------------------------------------------------------------------------


def write_pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=2)


def cifar_batch(labels: list[int], label_key: bytes, value: int) -> dict:
    """One batch in the official layout: bytes keys, (N, 3072) uint8 rows, a plain list of labels."""
    return {
        b"batch_label": b"testing batch",
        label_key: labels,
        b"data": np.full((len(labels), 3072), value, dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(folder / "batches.meta", {b"num_cases_per_batch": 2, b"label_names": names, b"num_vis": 3072})
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch([2 * i - 2, 2 * i - 1], b"labels", value=255))
    write_pickle(folder / "test_batch", cifar_batch([0, 9, 3], b"labels", value=0))
    return tmp_path


def test_cifar10_reads_the_official_pickles_from_the_folder_or_its_parent(cifar10_root: Path):
    for root in (cifar10_root, cifar10_root / "cifar-10-batches-py"):
        data = load_cifar(root, "cifar10")
        assert data.name == "cifar10" and data.num_classes == 10 and data.input_shape == (3, 32, 32)
        assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
        assert data.train.x.shape == (10, 3, 32, 32) and data.train.targets.tolist() == list(range(10))
        assert data.test.targets.tolist() == [0, 9, 3]
    white = (1 - torch.tensor([0.4914, 0.4822, 0.4465])) / torch.tensor([0.2470, 0.2435, 0.2616])
    assert torch.allclose(data.train.x[0, :, 0, 0], white, atol=1e-5)


def test_cifar100_uses_fine_labels(tmp_path: Path):
    folder = tmp_path / "cifar-100-python"
    fine = [f"class_{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20})
    train = cifar_batch([5, 99, 42, 0], b"fine_labels", value=128) | {b"coarse_labels": [1, 2, 3, 4]}
    write_pickle(folder / "train", train)
    write_pickle(folder / "test", cifar_batch([7, 8], b"fine_labels", value=3) | {b"coarse_labels": [0, 0]})
    data = load_dataset("cifar100", root=tmp_path)
    assert data.name == "cifar100" and data.num_classes == 100 and data.class_names[99] == "class_99"
    assert data.train.targets.tolist() == [5, 99, 42, 0] and data.test.targets.tolist() == [7, 8]


def test_cifar_missing_file_names_the_expected_path(cifar10_root: Path):
    (cifar10_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UnlearnError, match="data_batch_3 is missing"):
        load_cifar(cifar10_root)


def test_cifar_missing_root_and_corrupt_file_are_clear_errors(cifar10_root: Path):
    with pytest.raises(UnlearnError, match="does not exist"):
        load_cifar(cifar10_root / "nowhere")
    (cifar10_root / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UnlearnError, match="test_batch is corrupt"):
        load_cifar(cifar10_root)


def test_cifar_refuses_a_pickle_that_would_run_code(cifar10_root: Path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    write_pickle(cifar10_root / "cifar-10-batches-py" / "test_batch", {b"data": Exploit()})
    with pytest.raises(UnlearnError, match="not allowed"):
        load_cifar(cifar10_root)


# --- ImageFolder ----------------------------------------------------------------------------------


def write_image(path: Path, colour: tuple[int, int, int], size: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    for split, count in (("train", 3), ("val", 2)):
        for name, colour in (("dog", (200, 10, 10)), ("cat", (10, 10, 200))):
            for i in range(count):
                write_image(tmp_path / split / name / f"{i}.png", colour)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    return tmp_path


def test_imagefolder_labels_from_sorted_folders_and_resizes_on_access(folder_root: Path):
    data = load_imagefolder(folder_root, image_size=16)
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2 and data.input_shape == (3, 16, 16)
    assert data.train.targets.tolist() == [0, 0, 0, 1, 1, 1] and data.test.targets.tolist() == [0, 0, 1, 1]
    x, y = data.train[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    assert x[0].mean() > x[2].mean()  # the dog images are red


def test_imagefolder_reads_tiny_imagenet_layout(tmp_path: Path):
    for wnid in ("n02", "n01"):
        for i in range(2):
            write_image(tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (90, 90, 90))
    annotations = []
    for i, wnid in enumerate(("n02", "n01", "n02")):
        write_image(tmp_path / "val" / "images" / f"val_{i}.JPEG", (30, 30, 30))
        annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t9\t9")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    data = load_dataset("imagefolder", root=tmp_path, image_size=8)
    assert data.class_names == ["n01", "n02"] and data.train.targets.tolist() == [0, 0, 1, 1]
    assert sorted(data.test.targets.tolist()) == [0, 1, 1]
    assert data.test[0][0].shape == (3, 8, 8)


def test_imagefolder_errors_name_the_problem(folder_root: Path, tmp_path: Path):
    with pytest.raises(UnlearnError, match="does not exist"):
        load_imagefolder(tmp_path / "missing")
    with pytest.raises(UnlearnError, match="test folder"):
        load_imagefolder(folder_root, test_dir="test")
    write_image(folder_root / "val" / "bird" / "0.png", (0, 200, 0))
    with pytest.raises(UnlearnError, match=r"test classes \['bird'\]"):
        load_imagefolder(folder_root)
    (tmp_path / "bare" / "train").mkdir(parents=True)
    with pytest.raises(UnlearnError, match="no class folders"):
        load_imagefolder(tmp_path / "bare")


def test_imagefolder_finds_test_when_there_is_no_val(folder_root: Path, tmp_path: Path):
    (folder_root / "val").rename(folder_root / "test")
    assert len(load_imagefolder(folder_root, image_size=8).test) > 0
    (folder_root / "test").rename(folder_root / "held_out")
    with pytest.raises(UnlearnError, match="neither val/ nor test/"):
        load_imagefolder(folder_root, image_size=8)
    assert len(load_imagefolder(folder_root, image_size=8, test_dir="held_out").test) > 0


def test_imagefolder_unreadable_image_is_named_when_loaded(folder_root: Path):
    (folder_root / "train" / "cat" / "0.png").write_bytes(b"not an image")
    data = load_imagefolder(folder_root, image_size=8)  # lazy: nothing decoded yet
    with pytest.raises(UnlearnError, match=r"cat.0\.png cannot be read"):
        data.train[0]


# --- forget/remain splits -------------------------------------------------------------------------


def test_split_by_class_partitions_train_and_test():
    data = small_shapes()
    splits = split_by_class(data, [3, 7])
    sizes = {name: len(part) for name, part in splits.named().items()}
    assert tuple(sizes) == SPLIT_NAMES
    assert sizes == {"D_f": 40, "D_r": 160, "D_ft": 20, "D_rt": 80}
    assert set(splits.D_f.targets.tolist()) == {3, 7} and 3 not in splits.D_rt.targets.tolist()
    assert splits.remain_classes == [0, 1, 2, 4, 5, 6, 8, 9]


@pytest.mark.parametrize(
    ("forget", "message"),
    [([], "empty"), ([10], r"\[10\] are not class ids"), (list(range(10)), "all 10 classes")],
)
def test_split_by_class_rejects_bad_forget_lists(forget: list[int], message: str):
    with pytest.raises(UnlearnError, match=message):
        split_by_class(small_shapes(), forget)


# --- registry -------------------------------------------------------------------------------------


def test_registry_builds_by_name_with_params():
    data = load_dataset("shapes", num_train=20, num_test=10, seed=3)
    assert data.name == "shapes" and len(data.train) == 20
    assert load_dataset("digits", seed=0).name == "digits"


def test_registry_errors_list_the_valid_choices():
    with pytest.raises(UnlearnError, match=r"unknown dataset 'mnist'.*'cifar10'.*'shapes'"):
        load_dataset("mnist")
    with pytest.raises(UnlearnError, match=r"unknown param\(s\) \['num_trian'\].*'num_train'"):
        load_dataset("shapes", num_trian=10)
    with pytest.raises(UnlearnError, match=r"unknown param\(s\) \['variant'\]"):
        load_dataset("cifar10", root="x", variant="cifar100")
    with pytest.raises(UnlearnError, match=r"needs params \['root'\]"):
        load_dataset("cifar10")


def test_labeled_concat_and_relabeled_keep_targets_aligned():
    from unlearn.data.base import LabeledConcat, LabeledTensors, Relabeled

    a = LabeledTensors(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    b = LabeledTensors(torch.ones(2, 2), torch.tensor([3, 4]))
    both = LabeledConcat([a, b])
    assert both.targets.tolist() == [0, 1, 2, 3, 4] and [int(both[i][1]) for i in range(5)] == [0, 1, 2, 3, 4]
    relabeled = Relabeled(b, torch.tensor([7, 8]))
    assert relabeled.targets.tolist() == [7, 8] and relabeled[1][1] == 8 and torch.equal(relabeled[1][0], b.x[1])
    with pytest.raises(UnlearnError, match="must match"):
        Relabeled(b, torch.tensor([1]))
