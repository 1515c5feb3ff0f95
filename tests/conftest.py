"""Small deterministic fixtures: a Gaussian-blob classification task and a tiny MLP trained on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn.data.base import ClassificationData, LabeledTensors

NUM_CLASSES, DIM = 5, 16


def blobs(num_per_class: int, seed: int) -> LabeledTensors:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(NUM_CLASSES, DIM, generator=torch.Generator().manual_seed(123)) * 3 + 1
    labels = torch.arange(NUM_CLASSES).repeat_interleave(num_per_class)
    x = centers[labels] + 0.5 * torch.randn(len(labels), DIM, generator=generator)
    return LabeledTensors(x, labels)


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU())
        self.fc = nn.Linear(24, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.fixture(scope="session")
def blob_data() -> ClassificationData:
    return ClassificationData("blobs", blobs(60, 0), blobs(20, 1), NUM_CLASSES, (DIM,))


@pytest.fixture(scope="session")
def trained_mlp(blob_data) -> nn.Module:
    torch.manual_seed(0)
    model = TinyMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = blob_data.train.x, blob_data.train.targets
    for _ in range(300):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a shared CPU more threads only contend (LM modules use it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
