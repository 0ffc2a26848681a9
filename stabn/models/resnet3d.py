"""3D ResNet baseline after Hara et al., with the original's module names."""

from __future__ import annotations

from torch import Tensor, nn

from stabn.models.blocks import DEPTHS, Block, check_clip, make_layer


class ResNet3D(nn.Module):
    """3D ResNet: 7x7x7 stem, strides in time and space, global average pool, `fc`."""

    def __init__(
        self,
        block: Block,
        layers: tuple,
        num_classes: int,
        frame_length: int,
        frame_size: int = 224,
        dropout: float = 0.5,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.frame_length = frame_length
        self.frame_size = frame_size
        self.conv1 = nn.Conv3d(3, width, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        # Hara's bottleneck puts the 3x3x3 kernel (and stride) on conv2.
        kernels = dict(temporal_kernel=1, conv2_temporal_kernel=3)
        e = block.expansion
        self.layer1 = make_layer(block, width, width, layers[0], (1, 1, 1), **kernels)
        self.layer2 = make_layer(block, width * e, width * 2, layers[1], (2, 2, 2), **kernels)
        self.layer3 = make_layer(block, width * 2 * e, width * 4, layers[2], (2, 2, 2), **kernels)
        self.layer4 = make_layer(block, width * 4 * e, width * 8, layers[3], (2, 2, 2), **kernels)
        # The original sizes a fixed AvgPool3d from frame_length/16 and frame_size/32, which
        # equals adaptive pooling at its sizes and also works at any other.
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width * 8 * e, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_clip(x, None, type(self).__name__)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x).flatten(1)
        return self.fc(self.dropout(x))


def resnet3d(depth: int, **kwargs) -> ResNet3D:
    """The 3D ResNet baseline of the given depth (18, 34, 50, 101 or 152)."""
    block, layers = DEPTHS[depth]
    return ResNet3D(block, layers, **kwargs)
