"""Reference models, split_model / with_edit on them and on user models, and the training loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn.data.base import LabeledTensors
from unlearn.errors import UnlearnError
from unlearn.models import MODELS, TrainConfig, build_model, split_model, train, with_edit
from unlearn.models.train import load_checkpoint, prefers_channels_last, train_cached

# name -> (input shape, small params that keep the test fast, expected head name)
CASES = {
    "digits_cnn": ((1, 8, 8), {}, "fc"),
    "allcnn": ((3, 16, 16), {"width": 1 / 3}, "fc"),
    "fashion_cnn": ((1, 28, 28), {"width": 4, "feature_dim": 8}, "fc"),
    "resnet18": ((3, 16, 16), {"width": 8}, "fc"),
    "vit": ((3, 16, 16), {"dim": 32, "depth": 2, "heads": 2}, "head"),
}


def test_every_registered_model_has_a_case() -> None:
    assert set(CASES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_model_gives_one_logit_per_class(name: str) -> None:
    shape = (1, 8, 8) if name == "digits_cnn" else (3, 32, 32)
    model = build_model(name, num_classes=7, input_shape=shape).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_split_finds_the_head_and_reproduces_the_logits(name: str) -> None:
    shape, params, head_name = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, input_shape=shape, **params).eval()
    features, head = split_model(model)
    assert head is getattr(model, head_name)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        z = features(x)
        assert z.shape == (4, head.in_features)
        assert torch.equal(head(z), model(x))


def test_build_model_rejects_unknown_names_and_params() -> None:
    with pytest.raises(UnlearnError, match="valid names"):
        build_model("lenet", 10, (1, 8, 8))
    with pytest.raises(UnlearnError, match="'depth'.*valid params"):
        build_model("allcnn", 10, (3, 32, 32), depth=3)
    with pytest.raises(UnlearnError, match="set from the data"):
        build_model("resnet18", 10, (3, 32, 32), in_channels=1)
    with pytest.raises(UnlearnError, match=r"\(C, H, W\)"):
        build_model("digits_cnn", 10, (64,))


def test_vit_takes_its_image_size_from_the_input_shape() -> None:
    model = build_model("vit", 3, (1, 8, 8), patch_size=2, dim=16, depth=1, heads=2)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(UnlearnError, match="patch_size"):
        build_model("vit", 3, (1, 10, 10), patch_size=4)


def test_split_of_a_sequential_uses_its_last_linear() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    features, head = split_model(model)
    x = torch.randn(5, 3, 4)
    assert head is model[3]
    assert features(x).shape == (5, 6)
    assert torch.equal(head(features(x)), model(x))


class DropoutClassifier(nn.Module):
    """A torchvision-style model whose head `classifier` is Dropout then Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def test_split_finds_a_classifier_sequential() -> None:
    model = DropoutClassifier().eval()
    features, head = split_model(model)
    x = torch.randn(3, 8)
    assert head is model.classifier
    assert torch.equal(head(features(x)), model(x))


class NamedOut(nn.Module):
    """A model whose head has an unconventional name and whose last Linear is not the head."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(4, 2)
        self.gate = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.gate(x)))


def test_split_with_an_explicit_head_name() -> None:
    model = NamedOut()
    features, head = split_model(model, head="out")
    x = torch.randn(3, 4)
    assert head is model.out
    assert torch.equal(head(features(x)), model(x))


def test_split_errors_name_the_fix() -> None:
    no_linear = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(UnlearnError, match="head="):
        split_model(no_linear)
    with pytest.raises(UnlearnError, match="'decoder'"):
        split_model(NamedOut(), head="decoder")
    with pytest.raises(UnlearnError, match="head="):
        split_model(nn.Linear(4, 2))


def test_split_leaves_the_model_intact_and_shares_its_weights() -> None:
    model = build_model("digits_cnn", 10, (1, 8, 8), width=4, feature_dim=8).eval()
    before = dict(model.named_modules())
    features, _ = split_model(model)
    assert dict(model.named_modules()) == before
    assert isinstance(model.fc, nn.Linear)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        old = features(x)
        model.trunk[0][0].weight.mul_(2.0)
        assert not torch.equal(features(x), old)


def test_with_edit_inserts_the_edit_between_features_and_head() -> None:
    model = build_model("allcnn", 4, (3, 8, 8), width=1 / 6).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(with_edit(model, nn.Identity())(x), model(x))
        edited = with_edit(model, nn.Linear(model.fc.in_features, model.fc.in_features))(x)
    assert edited.shape == (3, 4)
    assert isinstance(model.fc, nn.Linear)


def blobs(n: int = 96, num_classes: int = 3) -> LabeledTensors:
    """Seeded, linearly separable 1x4x4 images: each class brightens its own pixels."""
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(n) % num_classes
    x = 0.3 * torch.randn(n, 1, 4, 4, generator=generator)
    x.view(n, -1)[torch.arange(n), y] += 2.0
    return LabeledTensors(x, y)


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def mean_loss(model: nn.Module, data: LabeledTensors) -> float:
    with torch.no_grad():
        return nn.functional.cross_entropy(model(data.x), data.targets).item()


def test_train_reduces_the_loss() -> None:
    data = blobs()
    torch.manual_seed(0)
    model = tiny_model()
    before = mean_loss(model, data)
    train(model, data, TrainConfig(epochs=10, lr=0.1, batch_size=16), progress=False)
    assert mean_loss(model, data) < 0.5 * before
    assert not model.training


class ViewCNN(nn.Module):
    """A user's CNN whose `view` fails on a channels-last map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).relu()
        return self.fc(h.view(len(h), -1))


class FastViewCNN(ViewCNN):
    prefers_channels_last = True


def test_channels_last_training_gives_the_same_model_back_in_the_default_format() -> None:
    data = LabeledTensors(torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,)))
    recipe = TrainConfig(epochs=2, lr=0.05, batch_size=16, augment=True)
    assert not prefers_channels_last(ViewCNN()) and prefers_channels_last(FastViewCNN())
    torch.manual_seed(0)
    default = ViewCNN()
    train(default, data, recipe, progress=False)  # a user's model keeps its format: its view works
    torch.manual_seed(0)
    fast = FastViewCNN()
    weight = fast.conv.weight
    with pytest.raises(RuntimeError, match="view"):  # really trained channels-last (and the format restored after)
        train(fast, data, recipe, progress=False)
    assert fast.conv.weight is weight and fast.conv.weight.is_contiguous()
    torch.manual_seed(0)
    cnn = build_model("fashion_cnn", 3, (1, 8, 8), width=4, feature_dim=8)
    assert prefers_channels_last(cnn)  # our CNNs opt in
    twin = build_model("fashion_cnn", 3, (1, 8, 8), width=4, feature_dim=8)
    twin.load_state_dict(cnn.state_dict())
    images = LabeledTensors(torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,)))
    train(cnn, images, recipe, progress=False)
    train(twin, images, recipe, progress=False, channels_last=False)
    assert all(p.is_contiguous() for p in cnn.parameters())
    for mine, theirs in zip(cnn.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3)  # the same maths, summed in another order


def test_train_config_rejects_a_bad_optimizer() -> None:
    with pytest.raises(UnlearnError, match="'lbfgs'"):
        TrainConfig(optimizer="lbfgs")


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(a.state_dict()[key], value) for key, value in b.state_dict().items())


def test_train_cached_loads_the_second_time_and_retrains_a_corrupt_file(tmp_path) -> None:
    data, config = blobs(), TrainConfig(epochs=2, batch_size=32)
    run = dict(dataset=data, config=config, cache_dir=tmp_path, key_parts={"data": "blobs"}, device="cpu")
    first, cached = train_cached(tiny_model, progress=False, **run)
    assert not cached
    second, cached = train_cached(tiny_model, progress=False, **run)
    assert cached
    assert same_weights(first, second)

    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        third, cached = train_cached(tiny_model, progress=False, **run)
    assert not cached
    assert same_weights(first, third)


def test_load_checkpoint_errors_clearly(tmp_path) -> None:
    model = tiny_model()
    with pytest.raises(UnlearnError, match="does not exist"):
        load_checkpoint(model, tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(UnlearnError, match="not a readable"):
        load_checkpoint(model, corrupt)
    other = tmp_path / "other.pt"
    torch.save(nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(UnlearnError, match="does not fit"):
        load_checkpoint(model, other)
    good = tmp_path / "good.pt"
    torch.save({"state_dict": tiny_model().state_dict()}, good)
    assert not load_checkpoint(model, good).training
