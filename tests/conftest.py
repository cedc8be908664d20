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


@pytest.fixture(scope="module")
def smoke_phenomenon(tmp_path_factory):
    """The smoke phenomenon chapter (cold protocol only), computed once into a store of the test module, which the
    module's tests see as the default store: (its folder, the chapter's result)."""
    from cascade import experiments

    root = tmp_path_factory.mktemp("store")
    mp = pytest.MonkeyPatch()
    mp.setenv("CASCADE_RESULTS", str(root / "results"))
    mp.setenv("CASCADE_CACHE", str(root / "cache"))
    mp.delenv("CASCADE_READ_ONLY", raising=False)
    yield root, experiments.run("phenomenon", "smoke", quiet=True, hot="")
    mp.undo()
