"""Every use of a private torch API, each behind one small function.

Each function says which private API it uses and why no public one does the job; each has a
test in tests/test_torch_compat.py that runs it on the installed torch and names the API and
the torch version when a new torch changes it.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.utils.data.dataloader
from torch import nn


def shared_uint8_tensor(shape: Tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor of `shape` in shared memory, made as `default_collate`
    makes its batches in a loader worker, so that it reaches the main process uncopied.

    Uses ``torch.UntypedStorage._new_shared``: the public ``Tensor.share_memory_()`` moves a
    tensor that already exists, which allocates the memory twice and copies it."""
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)


def storage_use_count(tensor: torch.Tensor) -> Optional[int]:
    """How many tensors (views included) and storage objects hold `tensor`'s memory, `tensor`
    itself counted; None when this torch cannot tell.

    Uses ``torch._C._storage_Use_Count`` on ``UntypedStorage._cdata``: torch has no public way
    to ask whether anything else uses a storage."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:
        return None
    try:
        storage = tensor.untyped_storage()
        # Less the reference of `storage`, made here to ask.
        return use_count(storage._cdata) - 1
    except (AttributeError, RuntimeError, TypeError):
        return None


def shut_down_loader_iterator(value: object) -> bool:
    """Stop the worker processes of `value` when it is a multiprocessing DataLoader iterator
    that is still running; True when it did. Errors of the shutdown itself come through.

    Uses ``torch.utils.data.dataloader._MultiProcessingDataLoaderIter``, its ``_shutdown`` flag
    and ``_shutdown_workers()``: an iterator has no public way to stop its workers other than
    being garbage-collected, which may come too late (see `stabn.commands.common`)."""
    iterator_class = getattr(torch.utils.data.dataloader, "_MultiProcessingDataLoaderIter", None)
    if iterator_class is None or not isinstance(value, iterator_class) or value._shutdown:
        return False
    value._shutdown_workers()
    return True


def compiled_inner(model: nn.Module) -> Optional[nn.Module]:
    """The module that `torch.compile` wrapped to make `model`, or None when `model` is not
    such a wrapper.

    Uses the wrapper's ``_orig_mod`` attribute: torch has no public way to get the module back
    (nor a public class to test for)."""
    return getattr(model, "_orig_mod", None)
