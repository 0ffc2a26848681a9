"""Each private torch API that `stabn.torch_compat` uses, run for real on the installed torch:
when a new torch changes one, its test fails naming the API and the torch version."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from stabn.torch_compat import compiled_inner, shared_uint8_tensor, shut_down_loader_iterator, storage_use_count


def changed(api: str) -> str:
    return f"torch {torch.__version__} changed the private API {api}: update stabn/torch_compat.py"


def test_shared_uint8_tensor_is_in_shared_memory():
    api = "torch.UntypedStorage._new_shared"
    try:
        buffer = shared_uint8_tensor((2, 3, 4))
    except (AttributeError, RuntimeError, TypeError) as e:
        pytest.fail(f"{changed(api)}: {e}")
    assert buffer.is_shared(), changed(api)
    assert buffer.shape == (2, 3, 4) and buffer.dtype == torch.uint8, changed(api)
    buffer.fill_(7)  # the memory is there to write
    assert int(buffer.sum()) == 7 * 24


def test_storage_use_count_follows_the_views_of_a_shared_buffer():
    api = "torch._C._storage_Use_Count on UntypedStorage._cdata"
    buffer = shared_uint8_tensor((2, 3))
    assert storage_use_count(buffer) == 1, changed(api)
    view = buffer[1]
    assert storage_use_count(buffer) == 2, changed(api)
    del view
    assert storage_use_count(buffer) == 1, changed(api)


def test_shut_down_loader_iterator_stops_a_running_worker():
    api = "torch.utils.data.dataloader._MultiProcessingDataLoaderIter, its _shutdown and _shutdown_workers()"
    iterator = iter(DataLoader(torch.arange(4), batch_size=2, num_workers=1))
    assert torch.equal(next(iterator), torch.tensor([0, 1]))
    workers = list(getattr(iterator, "_workers", []))
    assert shut_down_loader_iterator(iterator), changed(api)
    assert workers and not any(w.is_alive() for w in workers), changed(api)
    assert not shut_down_loader_iterator(iterator), changed(api)  # already shut down


def test_shut_down_loader_iterator_leaves_anything_else_alone():
    single_process = iter(DataLoader(torch.arange(4), batch_size=2, num_workers=0))
    assert not shut_down_loader_iterator(single_process)
    assert torch.equal(next(single_process), torch.tensor([0, 1]))
    assert not shut_down_loader_iterator(None) and not shut_down_loader_iterator([1, 2])


def test_compiled_inner_is_the_module_torch_compile_wrapped():
    inner = nn.Linear(2, 2)
    compiled = torch.compile(inner)  # builds the wrapper; nothing is compiled until it is called
    assert compiled is not inner
    assert compiled_inner(compiled) is inner, changed("the _orig_mod attribute of torch.compile's wrapper")
    assert compiled_inner(inner) is None
