"""All-CNN-C (Springenberg et al., 2015) in the variant used by unlearning papers.

Eight convolutions (3x3 except the last 1x1, two of them with stride 2 in place of pooling),
each followed by BatchNorm and ReLU, then global average pooling and a linear head `fc`.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution with 'same' padding, then BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class AllCNN(nn.Module):
    """All-CNN-C with 96/192 channels scaled by `width` (1/3 gives 32/64) and optional dropout.

    `dropout` is applied after each stride-2 convolution, as the paper does after its pooling
    layers. The head's input (the penultimate feature) is the globally average-pooled trunk output.
    """

    prefers_channels_last = True  # `train` runs it channels-last on the CPU (bench/results/train_speed.md)

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        narrow, wide = max(1, round(96 * width)), max(1, round(192 * width))
        self.trunk = nn.Sequential(
            conv_bn_relu(in_channels, narrow),
            conv_bn_relu(narrow, narrow),
            conv_bn_relu(narrow, narrow, stride=2),
            nn.Dropout(dropout),
            conv_bn_relu(narrow, wide),
            conv_bn_relu(wide, wide),
            conv_bn_relu(wide, wide, stride=2),
            nn.Dropout(dropout),
            conv_bn_relu(wide, wide),
            conv_bn_relu(wide, wide, kernel_size=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(wide, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))
