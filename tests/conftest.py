import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The unit tests use tiny tensors, for which a second intra-op thread on a shared 2-core machine costs far
    more than it gives (up to 70x slower batch norms were seen); one thread keeps the suite fast and steady."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
