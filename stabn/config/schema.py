"""The run configuration's schema: typed dataclasses, their defaults and the strings each
choice accepts. Plain data: it imports nothing of the package, so reading a config imports no
model, dataset or engine code. The code that acts on a choice checks against these tuples;
`stabn.config.loading` fills the dataclasses from YAML and validates them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# -- choices ----------------------------------------------------------------------------
# The model zoo: a 3D ResNet and an ST-ABN for each backbone depth; the original's "v2" names
# build exactly the v1 architecture and are kept as aliases, listed last.
MODEL_DEPTHS = (18, 34, 50, 101, 152)
MODEL_NAMES = tuple(name for d in MODEL_DEPTHS for name in (f"resnet{d}", f"abn_resnet{d}")) + tuple(
    f"abn_resnet{d}_v2" for d in MODEL_DEPTHS
)
# The models with an attention branch, whose forward returns `STABNOutput`.
STABN_NAMES = tuple(name for name in MODEL_NAMES if name.startswith("abn_"))
# Where clips come from: folders of JPEG frames, or video files decoded in the loader workers.
DATA_SOURCES = ("frames", "videos")
# ssv2: "id num_frames label" lines (frames); generic: "relative/path label" (a frame folder or
# a video file under the root); kinetics: Kinetics' CSV (label,youtube_id,time_start,time_end,
# split; videos); ssv2_json: SSv2's official JSON with its labels JSON beside it (videos).
LABEL_FORMATS = ("ssv2", "generic", "kinetics", "ssv2_json")
# The label formats each source reads.
SOURCE_LABEL_FORMATS = {"frames": ("ssv2", "generic"), "videos": ("generic", "kinetics", "ssv2_json")}
# train.freeze: the backbone stages frozen, up to and including the one named (stem: conv1 and
# bn1; backbone: all of layer4 too); the rest trains.
FREEZE_POINTS = ("none", "stem", "layer1", "layer2", "layer3", "layer4", "backbone")
# Short videos: repeat the first frame, the last, or loop.
PADDING_MODES = ("first", "last", "loop")
CHANNEL_ORDERS = ("bgr", "rgb")
FLIP_MODES = ("horizontal", "vertical", "none")
JITTER_MODES = ("tpn", "clip")  # data.jitter also takes "none"
SCHEDULES = ("multistep", "cosine")
AMP_SETTINGS = ("auto", "bf16", "fp16", "off")
VIEW_AVERAGES = ("softmax", "logits")
# How the spatial map s weights layer3's features x: the original's x * (1 + s) keeps every
# feature and at most doubles some; "multiply", x * s, passes only what the map keeps.
SPATIAL_GATES = ("residual", "multiply")
# How the spatially and the temporally weighted features meet: the original concatenates
# x * gate(s) and x * a on channels; "product" weights x once by gate(s) * a, so the
# perception branch sees nothing that either map removes.
FUSIONS = ("concat", "product")
# How the maps are scaled: the original leaves the sigmoids as they are; "peak" divides the
# spatial map by its maximum in each frame and the temporal map by its maximum over the clip.
# The features pass a BatchNorm after the gate, which undoes any uniform scaling of a map, so
# only a map whose peak is fixed at 1 can be made smaller (by `train.spatial_sparsity`) by
# covering less of the clip rather than by shrinking all over.
ATTENTION_NORMS = ("none", "peak")
# Where the temporal map comes from: the original's "mlp" mixes the frames' pooled responses
# through Linear(T, T) layers, which can (and in practice do) learn a fixed profile over
# frame positions whatever the clip; "frame" scores each frame from its own pooled response
# (a temporal kernel of 3, the same weights at every position), so the map follows the clip;
# "class" scores each frame by the attention branch's strongest class response in it (the
# per-frame scores its classifier reads), so the frames that carry the decision stand out;
# "motion" scores each frame by how much what the spatial map attends to changes from the
# frame before, read from the stem's per-frame features: evidence local in time, where
# layer3's temporal receptive field spans the whole clip.
TEMPORAL_SOURCES = ("mlp", "frame", "class", "motion")
# How `stabn.explain`, the demo and eval.py's pictures explain a clip: ST-ABN's own maps, or a
# peer explainer (Captum) of the perception branch's logit, which works for every model.
EXPLAIN_METHODS = ("attention", "gradcam", "input_gradient", "integrated_gradients")
# eval.attention_method also takes "auto": attention for an ST-ABN, gradcam for a 3D ResNet.
ATTENTION_METHODS = ("auto", *EXPLAIN_METHODS)


@dataclass
class AttentionOptions:
    """How ST-ABN's attention maps weight the features; the defaults are the original's."""

    spatial_gate: str = "residual"  # one of SPATIAL_GATES
    fusion: str = "concat"  # one of FUSIONS
    norm: str = "none"  # one of ATTENTION_NORMS
    temporal: str = "mlp"  # one of TEMPORAL_SOURCES

    def __post_init__(self) -> None:
        choices = {
            "spatial_gate": SPATIAL_GATES,
            "fusion": FUSIONS,
            "norm": ATTENTION_NORMS,
            "temporal": TEMPORAL_SOURCES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"attention {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @property
    def original(self) -> bool:
        return self == AttentionOptions()


# -- sections ---------------------------------------------------------------------------
@dataclass
class ModelConfig:
    name: str = "abn_resnet50"
    num_classes: int = 174
    width: int = 64
    dropout: float = 0.5
    # 2D ImageNet weights inflated into the 3D model: "imagenet" (torchvision's IMAGENET1K_V1
    # through its weights API and cache, $TORCH_HOME) or a local torchvision ResNet file.
    pretrained_2d: Optional[str] = None
    # The 2D file must fill the whole backbone (conv1, bn1, layer1-4): a file of another depth or
    # width is an error naming its first misfit. false loads the tensors that fit, with a warning.
    pretrained_2d_strict: bool = True
    sync_bn: bool = False
    # A checkpoint (this project's or the original's) whose weights start the run: every tensor
    # whose shape fits is loaded; the layers whose shape depends on the class count are
    # re-initialised (fine-tuning to another label set). Applied after pretrained_2d.
    init_from: Optional[str] = None
    # ST-ABN's attention (stabn/models/stabn.py); the defaults are the original architecture:
    # spatial_gate residual: x * (1 + s) | multiply: x * s;
    # fusion concat: [x * gate(s), x * a] | product: x * gate(s) * a;
    # norm none | peak: the spatial map divided by its maximum in each frame, the temporal
    # map by its maximum over the clip; temporal mlp (Linear(T, T) over the frames) | frame (each
    # frame scored from its own response, the same weights at every position).
    attention: AttentionOptions = field(default_factory=AttentionOptions)


@dataclass
class DataConfig:
    source: str = "frames"  # one of DATA_SOURCES
    # The folder the label lists' paths are under: frame folders, or video files. data.root is
    # the same key by a name that fits videos too; give either.
    frames_root: str = ""
    root: str = ""
    train_labels: str = ""
    val_labels: str = ""
    class_names: Optional[str] = None  # one name per line, line i = class i
    ground_truth: Optional[str] = None  # boxes and event windows; default: beside frames_root
    label_format: str = "ssv2"  # one of LABEL_FORMATS (frames: ssv2 | generic; videos: generic | kinetics | ssv2_json)
    # Videos: frames are resized so that their short side is this many pixels before the crop
    # (Pillow bilinear, as prepare_ssv2 --short-side); None keeps them as decoded.
    short_side: Optional[int] = None
    frame_template: str = "%06d.jpg"
    frame_length: int = 32
    frame_size: int = 224
    channel_order: str = "bgr"  # the original decoded with OpenCV
    padding: str = "first"  # short videos: first | last | loop
    jitter: str = "tpn"  # tpn (per frame, as the original) | clip | none
    # The training flip, p = 0.5: horizontal | vertical | none. The original's code flips axis 1
    # of its [T, H, W, C] clips, i.e. vertically, under a "horizontal flip" comment.
    flip: str = "horizontal"
    num_workers: int = 4
    skip_corrupt: bool = False


@dataclass
class TrainConfig:
    epochs: int = 150
    # Per GPU (per process on the CPU) under every launcher: train_dp.py on N GPUs steps
    # N x batch_size clips, torchrun with N processes too. The start-up log line says the total.
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    # Fine-tuning: the backbone frozen up to and including this stage (one of FREEZE_POINTS;
    # backbone with a 3D ResNet: a linear probe), and the learning rate of the layers that
    # model.init_from re-initialised, as a multiple of train.lr.
    freeze: str = "none"
    reset_lr_multiplier: float = 1.0
    schedule: str = "multistep"  # multistep | cosine
    milestones: List[int] = field(default_factory=lambda: [75, 125])
    gamma: float = 0.1
    warmup_epochs: int = 0
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    channels_last: Optional[bool] = None  # None: on for GPU
    compile: bool = False
    seed: int = 0
    resume: Optional[str] = None  # a checkpoint path, or "latest"
    # With resume "latest": a checkpoint-latest.pt that cannot be read (cut short, damaged) gives
    # way to the newest checkpoint of the run that reads, with a warning; true stops instead.
    resume_strict: bool = False
    save_every: int = 10
    val_every: int = 1
    log_every: int = 10
    # Add spatial_sparsity * mean spatial attention and temporal_sparsity * mean temporal
    # attention to an ST-ABN's loss: the
    # maps then keep only what the decision needs.
    spatial_sparsity: float = 0.0
    temporal_sparsity: float = 0.0
    max_iters_per_epoch: int = 0  # 0: the whole epoch; >0 shortens epochs for smoke runs
    # Seconds a process waits in a collective (gradient all-reduce, validation counts, barriers)
    # for the others, under torchrun (eval.py too); past it the job ends with one line naming
    # the step, instead of hanging. Longer than any one step, validation's unevenness included.
    collective_timeout: float = 1800.0


@dataclass
class EvalConfig:
    checkpoint: str = "best"  # best | latest | final | a path
    num_clips: int = 1
    num_crops: int = 1
    batch_size: int = 8  # videos per GPU (per process on the CPU)
    # Precision and layout of eval.py. The defaults, fp32 (no TF32) in NCDHW, reproduce the
    # original's evaluation; bf16 and channels_last are faster on a GPU.
    amp: str = "off"  # off | auto | bf16 | fp16
    channels_last: bool = False
    save_scores: bool = False  # scores.npz: each video's averaged scores of both branches
    average: str = "softmax"  # softmax | logits
    save_attention: bool = False
    # What the attention pictures show: one of ATTENTION_METHODS; auto is the model's own
    # attention for an ST-ABN (the original's pictures), Grad-CAM for a 3D ResNet.
    attention_method: str = "auto"
    attention_layer: Optional[str] = None  # Grad-CAM's layer; None: layer3 for ST-ABN, layer4 else
    attention_gif: bool = False
    max_attention_videos: int = 32
    explain_metrics: bool = False
    explain_videos: int = 64
    explain_steps: int = 16
    output: str = "eval"  # sub-folder of the logdir for results
    # Seeds the loader's workers and the random voxel order the explanation metrics compare with.
    seed: int = 0
    # As train.collective_timeout, for eval.py's collectives under torchrun.
    collective_timeout: float = 1800.0


@dataclass
class Config:
    logdir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# Dotted key -> the strings it accepts.
CHOICES = {
    "data.source": DATA_SOURCES,
    "data.label_format": LABEL_FORMATS,
    "data.channel_order": CHANNEL_ORDERS,
    "data.padding": PADDING_MODES,
    "data.jitter": (*JITTER_MODES, "none"),
    "data.flip": FLIP_MODES,
    "train.schedule": SCHEDULES,
    "train.freeze": FREEZE_POINTS,
    "model.attention.spatial_gate": SPATIAL_GATES,
    "model.attention.fusion": FUSIONS,
    "model.attention.norm": ATTENTION_NORMS,
    "model.attention.temporal": TEMPORAL_SOURCES,
    "train.amp": AMP_SETTINGS,
    "eval.amp": AMP_SETTINGS,
    "eval.average": VIEW_AVERAGES,
    "eval.attention_method": ATTENTION_METHODS,
}
