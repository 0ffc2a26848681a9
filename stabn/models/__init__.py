"""Model zoo: the 3D ResNet baseline, ST-ABN, their specs, the registry, 2D->3D inflation,
loading from checkpoints and fine-tuning from them."""

from stabn.models.abn import STABN, STABNOutput
from stabn.models.blocks import to_channels_last_3d
from stabn.models.finetune import (
    EvalBatchNorm3d,
    InitReport,
    class_layers,
    freeze_backbone,
    frozen_modules,
    init_from_checkpoint,
)
from stabn.models.inflate import InflationReport, inflate_2d_weights
from stabn.models.pretrained import infer_architecture, load_pretrained, resolve_spec
from stabn.models.registry import MODEL_NAMES, MODEL_REGISTRY, build_model, is_stabn, list_models
from stabn.models.resnet3d import ResNet3D
from stabn.models.spec import DEFAULT_FRAME_LENGTH, DEFAULT_FRAME_SIZE, ModelSpec, model_spec

__all__ = [
    "MODEL_NAMES",
    "MODEL_REGISTRY",
    "build_model",
    "list_models",
    "is_stabn",
    "InflationReport",
    "inflate_2d_weights",
    "ResNet3D",
    "STABN",
    "STABNOutput",
    "to_channels_last_3d",
    "ModelSpec",
    "model_spec",
    "DEFAULT_FRAME_LENGTH",
    "DEFAULT_FRAME_SIZE",
    "load_pretrained",
    "resolve_spec",
    "infer_architecture",
    "InitReport",
    "init_from_checkpoint",
    "class_layers",
    "EvalBatchNorm3d",
    "freeze_backbone",
    "frozen_modules",
]
