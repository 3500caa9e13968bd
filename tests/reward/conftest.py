import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The reward tests run small tensors: on a busy 2-core machine, waking a second OpenMP
    thread costs more than an op (a 2000-element logsigmoid: 15 ms with two, 0.01 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
