"""DigitsCNN: a tiny convolutional classifier for the 8x8 sklearn digits, trained in seconds on CPU."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution that keeps the spatial size, then BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DigitsCNN(nn.Module):
    """Three 3x3 conv layers, a Linear-BatchNorm-ReLU `feature_dim` penultimate, and the head `fc`.

    The penultimate layer is batch-normalised, like AllCNN's last block, so the features that
    MoRE edits and that KR probes train on have a well-conditioned scale.

    The trunk ends in a 2x2 adaptive pool, so any input of at least 2x2 pixels works; on 8x8
    digits it reaches about 98% test accuracy with the default `TrainConfig`.
    """

    prefers_channels_last = True  # `train` runs it channels-last on the CPU (bench/results/train_speed.md)

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            conv_bn_relu(in_channels, width),
            conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 4, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))
