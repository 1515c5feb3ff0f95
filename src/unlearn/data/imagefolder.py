"""Image-folder trees (root/train/<class>/*.png, root/val/<class>/...) and Tiny-ImageNet, read lazily.

Labels come from paths alone, so `.targets` is known without decoding a single image; pixels are
decoded, resized and normalised (ImageNet channel mean/std) one item at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from unlearn.data.base import ClassificationData
from unlearn.errors import UnlearnError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_ANNOTATIONS = "val_annotations.txt"


class ImageFiles(Dataset):
    """Image files with known labels, decoded to normalised (3, size, size) floats on access."""

    def __init__(self, paths: list[Path], targets: list[int], image_size: int) -> None:
        self.paths = paths
        self.targets = torch.tensor(targets, dtype=torch.long)
        self.image_size = image_size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
            raise UnlearnError(f"image {path} cannot be read ({error}); replace or delete the file.") from error
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 255
        return (pixels - self.mean) / self.std, int(self.targets[index])


def _images_in(folder: Path) -> list[Path]:
    """Image files anywhere under `folder` (Tiny-ImageNet nests them in `images/`), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, one entry per (non-hidden) subfolder of `split_dir`."""
    return {d.name: _images_in(d) for d in sorted(split_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def _annotated(split_dir: Path) -> dict[str, list[Path]]:
    """Class name -> image files for Tiny-ImageNet's `val/images/*` + `val/val_annotations.txt` layout."""
    listing = split_dir / TINY_ANNOTATIONS
    by_class: dict[str, list[Path]] = {}
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise UnlearnError(
                f"{listing} line {number} is {line!r}; expected 'filename<TAB>class' (then optional box fields)."
            )
        path = split_dir / "images" / fields[0]
        if not path.is_file():
            raise UnlearnError(f"{listing} line {number} lists {path}, which does not exist.")
        by_class.setdefault(fields[1], []).append(path)
    return {name: sorted(paths) for name, paths in sorted(by_class.items())}


TEST_DIRS = ("val", "test")  # looked for in this order when test_dir is not given


def _split_dir(root: Path, name: str, role: str) -> Path:
    split_dir = root / name
    if not split_dir.is_dir():
        raise UnlearnError(f"{role} folder {split_dir} does not exist; set {role}_dir to a subfolder of {root}.")
    return split_dir


def load_imagefolder(
    root: str | Path, image_size: int = 64, train_dir: str = "train", test_dir: str | None = None
) -> ClassificationData:
    """Train/test sets from `root/train_dir/<class>/...` and `root/test_dir` (class folders or Tiny-ImageNet).

    Without `test_dir`, the test split is `root/val`, or `root/test` when there is no `val/` (`val/` comes
    first because Tiny-ImageNet ships an unlabelled `test/` next to its labelled `val/`).

    Class ids follow the sorted class folder names of the training split; every test class must be
    one of them. Images are resized to `image_size` squared and normalised with ImageNet statistics.
    """
    root = Path(root)
    if not root.is_dir():
        raise UnlearnError(f"ImageFolder root {root} does not exist; point it at the folder holding {train_dir}/.")
    if image_size < 8:
        raise UnlearnError(f"image_size={image_size} is too small; use 8 or more (64 suits Tiny-ImageNet).")
    train_folder = _split_dir(root, train_dir, "train")
    train_files = _class_folders(train_folder)
    if not train_files:
        raise UnlearnError(f"{train_folder} has no class folders; expected {train_folder}/<class>/<image>.png.")
    empty = [name for name, paths in train_files.items() if not paths]
    if empty:
        raise UnlearnError(
            f"class folders {empty} in {train_folder} hold no {'/'.join(IMAGE_SUFFIXES)} images; "
            "add images or remove the folders."
        )
    class_names = list(train_files)
    if test_dir is None:
        test_dir = next((name for name in TEST_DIRS if (root / name).is_dir()), None)
        if test_dir is None:
            raise UnlearnError(f"{root} has neither val/ nor test/; add one, or set test_dir to the test folder.")
    test_folder = _split_dir(root, test_dir, "test")
    annotated = (test_folder / TINY_ANNOTATIONS).is_file()
    test_files = _annotated(test_folder) if annotated else _class_folders(test_folder)
    if not any(test_files.values()):
        raise UnlearnError(f"{test_folder} has no labelled images; expected {test_folder}/<class>/<image>.png.")
    unknown = sorted(set(test_files) - set(class_names))
    if unknown:
        hint = " (Tiny-ImageNet's test/ split is unlabelled: use test_dir='val')" if unknown == ["images"] else ""
        raise UnlearnError(
            f"test classes {unknown[:5]}{' ...' if len(unknown) > 5 else ''} in {test_folder} are not class "
            f"folders of {train_folder}; every test class needs training images{hint}."
        )

    def dataset(files: dict[str, list[Path]]) -> ImageFiles:
        ids = {name: index for index, name in enumerate(class_names)}
        pairs = [(path, ids[name]) for name, paths in files.items() for path in paths]
        return ImageFiles([p for p, _ in pairs], [t for _, t in pairs], image_size)

    return ClassificationData(
        name="imagefolder",
        train=dataset(train_files),
        test=dataset(test_files),
        num_classes=len(class_names),
        input_shape=(3, image_size, image_size),
        class_names=class_names,
    )
