"""FashionCNN: a small 28x28 classifier (Fashion-MNIST, MNIST) cheap enough to train on two CPU cores.

Three BatchNorm convolutions (5x5 at full resolution, then 3x3 after each 2x2 max-pool), a flattened
7x7 map into a batch-normalised `feature_dim` penultimate layer, and the head `fc`. Flattening keeps
where a feature sits (a collar, a sleeve), which the look-alike clothing classes need more than
global pooling would; the penultimate BatchNorm gives MoRE and the KR probe well-scaled features.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Convolution with 'same' padding, then BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FashionCNN(nn.Module):
    """conv5x5(width) - pool - conv3x3(2 width) - pool - conv3x3(2 width) - Linear-BN-ReLU(feature_dim) - fc.

    The two pools make any input divisible by 4 work; 28x28 gives a 7x7 map.
    """

    prefers_channels_last = True  # `train` runs it channels-last on the CPU (bench/results/train_speed.md)

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        width: int = 32,
        feature_dim: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        side = image_size // 4
        self.trunk = nn.Sequential(
            conv_bn_relu(in_channels, width, 5),
            nn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width, 3),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * width, 2 * width, 3),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width * side * side, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))
