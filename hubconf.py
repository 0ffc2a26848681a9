"""torch.hub entries, one per model of the zoo (`stabn.MODEL_NAMES`):

    model = torch.hub.load("path/to/stabn", "abn_resnet50", source="local", weights="https://.../ckpt.pt")

Each entry takes `weights=None | path | URL`, `sha256=` for a URL, and `build_model`'s
keywords. With weights, the checkpoint's spec fills in what the keywords leave out (class
count, width, frame size, class names) and the model comes back ready, in eval mode; without,
it is built untrained for the SSv2 recipe (174 classes, 32 frames of 224 px) unless the
keywords say otherwise.
"""

from stabn.config.schema import MODEL_NAMES as _MODEL_NAMES
from stabn.models.pretrained import hub_model as _hub_model

dependencies = ["torch", "torchvision", "numpy", "yaml", "PIL", "tqdm"]


def _entry(name):
    def entry(weights=None, **kwargs):
        return _hub_model(name, weights, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"{name} of stabn's zoo; weights=None | path | URL, and build_model's keywords."
    return entry


for _name in _MODEL_NAMES:
    globals()[_name] = _entry(_name)
