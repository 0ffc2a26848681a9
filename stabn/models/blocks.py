"""Residual blocks shared by the 3D ResNet baseline and ST-ABN.

The two families differ only in kernel shapes and strides, so the blocks take those as
arguments; module names (`conv1`, `bn1`, ..., `downsample`) are the original's.
"""

from __future__ import annotations

from typing import Optional, Tuple, Type, Union

import torch
from torch import Tensor, nn

Triple = Tuple[int, int, int]


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions; the first carries the stride."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: Triple = (1, 1, 1),
        downsample: Optional[nn.Module] = None,
        temporal_kernel: int = 3,
        conv2_temporal_kernel: int = 3,
    ) -> None:
        # The original's BasicBlock is always 3x3x3 whatever temporal kernel its layer asks for.
        del temporal_kernel, conv2_temporal_kernel
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with configurable temporal kernels.

    ST-ABN puts the temporal kernel on `conv1` (k_t x 1 x 1) and keeps `conv2` purely
    spatial; the Hara et al. baseline has a 1x1x1 `conv1` and a 3x3x3 `conv2`.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: Triple = (1, 1, 1),
        downsample: Optional[nn.Module] = None,
        temporal_kernel: int = 1,
        conv2_temporal_kernel: int = 1,
    ) -> None:
        super().__init__()
        kt1, kt2 = temporal_kernel, conv2_temporal_kernel
        self.conv1 = nn.Conv3d(inplanes, planes, (kt1, 1, 1), padding=(kt1 // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (kt2, 3, 3), stride=stride, padding=(kt2 // 2, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Type[Union[BasicBlock, Bottleneck]]


def make_layer(
    block: Block,
    inplanes: int,
    planes: int,
    blocks: int,
    stride: Triple = (1, 1, 1),
    temporal_kernel: int = 1,
    conv2_temporal_kernel: int = 1,
) -> nn.Sequential:
    """A stage of `blocks` residual blocks; the first one strides and projects the shortcut."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != (1, 1, 1) or inplanes != out_channels:
        downsample = nn.Sequential(
            nn.Conv3d(inplanes, out_channels, 1, stride=stride, bias=False), nn.BatchNorm3d(out_channels)
        )
    kernels = dict(temporal_kernel=temporal_kernel, conv2_temporal_kernel=conv2_temporal_kernel)
    layers = [block(inplanes, planes, stride, downsample, **kernels)]
    layers += [block(out_channels, planes, **kernels) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


# Depth -> (block type, blocks per stage), shared by both families.
DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def check_clip(x: Tensor, frame_length: Optional[int], model_name: str) -> None:
    """Fail early, with the shapes named, on a clip the model cannot take."""
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"{model_name} expects clips shaped [B, 3, T, H, W], got {list(x.shape)}")
    if frame_length is not None and x.shape[2] != frame_length:
        raise ValueError(
            f"{model_name} was built for frame_length={frame_length} but got a clip of "
            f"{x.shape[2]} frames (shape {list(x.shape)}); build or load the model with "
            f"frame_length={x.shape[2]} or sample {frame_length} frames"
        )


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """`model` with its Conv3d weights in channels_last_3d. ``model.to(memory_format=...)``
    itself fails on an ST-ABN: it converts every 4-D and 5-D tensor, and `conv_temp_att2` is
    a Conv2d (4-D weight), which channels_last_3d cannot hold."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
    return model
