"""Spatio-Temporal Attention Branch Network (ST-ABN) on a 3D ResNet backbone.

Module names and the order of operations follow the original so that its checkpoints load
unchanged and give the same outputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stabn.config.schema import AttentionOptions
from stabn.models.blocks import DEPTHS, Block, check_clip, make_layer


class STABNOutput(NamedTuple):
    """Positions match the original's tuple `(out_per, out_att, spatial_att, temporal_att)`."""

    logits: Tensor  # perception branch, [B, K]
    att_logits: Tensor  # attention branch, [B, K]
    spatial_attention: Tensor  # [B, 1, T, h, w], in (0, 1)
    temporal_attention: Tensor  # [B, 1, T, 1, 1], in (0, 1)


class STABN(nn.Module):
    """ST-ABN: layer3 features feed an attention branch whose spatial and temporal maps
    re-weight those features before the perception branch (layer4, `fc`) classifies them."""

    def __init__(
        self,
        block: Block,
        layers: tuple,
        num_classes: int,
        frame_length: int,
        frame_size: int = 224,
        dropout: float = 0.5,
        width: int = 64,
        attention: Optional[AttentionOptions] = None,
    ) -> None:
        super().__init__()
        self.frame_length = frame_length
        self.frame_size = frame_size
        self.attention = attention or AttentionOptions()
        e = block.expansion

        self.conv1 = nn.Conv3d(3, width, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.layer1 = make_layer(block, width, width, layers[0])
        self.layer2 = make_layer(block, width * e, width * 2, layers[1], (1, 2, 2))
        self.layer3 = make_layer(block, width * 2 * e, width * 4, layers[2], (1, 2, 2), 3)

        # Perception branch.
        self.layer4 = make_layer(block, width * 4 * e, width * 8, layers[3], (1, 2, 2), 3)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout_per = nn.Dropout(dropout)
        self.fc = nn.Linear(width * 8 * e, num_classes)

        # Registered after the perception branch, as in the original: the weights are drawn in
        # this order.
        self._add_attention_branch(block, layers[3], width, num_classes, dropout)
        self._init_weights()

    def _add_attention_branch(self, block: Block, blocks: int, width: int, num_classes: int, dropout: float) -> None:
        """The attention branch, fed by layer3, and the fusion of its maps back into layer3's
        features."""
        T, K, e = self.frame_length, num_classes, block.expansion
        self.layer_att_common = make_layer(block, width * 4 * e, width * 8, blocks, (1, 1, 1), 3)
        self.conv_att_common = nn.Sequential(
            nn.BatchNorm3d(width * 8 * e),
            nn.Conv3d(width * 8 * e, K, 1, bias=False),
            nn.BatchNorm3d(K),
            nn.ReLU(inplace=True),
        )
        self.conv_att_out = nn.Sequential(nn.Conv3d(K, K, 1, bias=False), nn.AdaptiveAvgPool3d((T, 1, 1)))
        self.dropout_att = nn.Dropout(dropout)
        self.fc_att_out = nn.Linear(K * T, K)
        self.conv_spatial_att = nn.Sequential(nn.Conv3d(K, 1, 1, bias=False), nn.BatchNorm3d(1), nn.Sigmoid())
        self._add_temporal_attention(K)
        # Fuses the spatially and the temporally weighted features back to layer3's width.
        fused = width * 8 * e if self.attention.fusion == "concat" else width * 4 * e
        self.conv_att_mechanism = nn.Sequential(
            nn.Conv3d(fused, width * 4 * e, 1, bias=False), nn.BatchNorm3d(width * 4 * e)
        )

    def _add_temporal_attention(self, num_classes: int) -> None:
        """The layers of the temporal map that `attention.temporal` names."""
        T, K, temporal = self.frame_length, num_classes, self.attention.temporal
        if temporal in ("mlp", "frame"):  # "class" and "motion" read other evidence
            self.conv_temp_att1 = nn.Sequential(
                nn.Conv3d(K, 1, 3, padding=1, bias=False), nn.BatchNorm3d(1), nn.ReLU(inplace=True)
            )
        if temporal == "mlp":
            self.conv_temp_att2 = nn.Sequential(
                nn.Conv2d(T, T, 1, bias=False), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)
            )
            self.conv_temp_att3 = nn.Sequential(nn.Linear(T, T), nn.ReLU(inplace=True), nn.Linear(T, T), nn.Sigmoid())
        elif temporal == "frame":
            self.temp_att_frame = nn.Sequential(nn.Conv1d(1, 1, 3, padding=1), nn.Sigmoid())
        elif temporal == "class":
            self.temp_att_class = nn.Sequential(nn.Conv1d(1, 1, 1), nn.Sigmoid())
        else:
            self.temp_att_motion = MotionScore()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                # The original's rule leaves k_w out of the fan.
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> STABNOutput:
        check_clip(x, self.frame_length, type(self).__name__)
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(stem)))

        att = self.conv_att_common(self.layer_att_common(x))
        frame_scores = self.conv_att_out(att)  # [B, K, T, 1, 1]
        att_logits = self.fc_att_out(self.dropout_att(frame_scores.flatten(1)))
        spatial = self.conv_spatial_att(att)
        b, _, t, h, w = att.shape
        if self.attention.temporal == "mlp":
            temporal = self.conv_temp_att1(att).view(b, t, h, w)
            temporal = self.conv_temp_att3(self.conv_temp_att2(temporal).view(b, t))
        elif self.attention.temporal == "frame":
            temporal = self.temp_att_frame(self.conv_temp_att1(att).mean(dim=(3, 4)))
        elif self.attention.temporal == "class":
            temporal = self.temp_att_class(frame_scores.amax(dim=1).view(b, 1, t))
        else:
            temporal = self.temp_att_motion(attended_motion(stem, spatial))
        temporal = temporal.view(b, 1, t, 1, 1)
        if self.attention.norm == "peak":
            # The floor keeps a map whose sigmoid underflowed to 0 everywhere at 0, not NaN.
            spatial = spatial / spatial.amax(dim=(3, 4), keepdim=True).clamp_min(1e-12)
            temporal = temporal / temporal.amax(dim=2, keepdim=True).clamp_min(1e-12)

        gate = 1 + spatial if self.attention.spatial_gate == "residual" else spatial
        if self.attention.fusion == "concat":
            x = torch.cat((x * gate, x * temporal), dim=1)
        else:
            x = x * (gate * temporal)
        x = self.layer4(self.conv_att_mechanism(x))
        logits = self.fc(self.dropout_per(self.avgpool(x).flatten(1)))
        return STABNOutput(logits, att_logits, spatial, temporal)


class MotionScore(nn.Module):
    """A frame's temporal weight from its attended motion m >= 0 (`attended_motion`):
    sigmoid(exp(log_scale) * m + bias), increasing in m whatever the weights learn. Left free
    (a convolution over m), the map learned to peak on the still frames before and after an
    event, which show where the target started and ended as well as the event shows how it
    moved, and the map stopped saying when anything happened (docs/EXPLANATIONS.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, motion: Tensor) -> Tensor:
        return torch.sigmoid(self.log_scale.exp() * motion + self.bias)


def attended_motion(stem: Tensor, spatial: Tensor) -> Tensor:
    """How much what the spatial map attends to changes at each frame, [B, 1, T]: the stem's
    per-frame features (no temporal kernel yet, so frame t sees frame t alone) differenced with
    the frame before, pooled to the map's cells and averaged under the map, then divided by the
    clip's mean so that the scale of the features does not matter. Frame 0 has no frame before
    it and no change. Moving distractors change too, but where the map does not look."""
    change = (stem[:, :, 1:] - stem[:, :, :-1]).abs().mean(dim=1, keepdim=True)  # [B, 1, T-1, H', W']
    change = F.adaptive_avg_pool3d(change, (change.shape[2], *spatial.shape[-2:]))
    weights = spatial[:, :, 1:]
    motion = (change * weights).sum(dim=(3, 4)) / weights.sum(dim=(3, 4)).clamp_min(1e-12)  # [B, 1, T-1]
    motion = F.pad(motion, (1, 0))
    return motion / motion.mean(dim=2, keepdim=True).clamp_min(1e-12)


def stabn(depth: int, **kwargs) -> STABN:
    """ST-ABN of the given backbone depth (18, 34, 50, 101 or 152)."""
    block, layers = DEPTHS[depth]
    return STABN(block, layers, **kwargs)
