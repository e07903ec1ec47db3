"""Shared test configuration."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get(
        "SKNETS_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)


@pytest.fixture(scope="session")
def shared_data():
    """The real data folder (``../shared/data``); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def quiet_one_thread():
    """One torch thread and no warnings for the test, restored after.

    Two intra-op threads on a busy two-core machine can be far slower than one;
    the code under test never changes the caller's threads, the tests do.
    """
    import warnings

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def epoch_counter(monkeypatch):
    """Count the training runs and the epochs trained, alone or stacked.

    A run is one network trained by its own ``fit`` (``_fit_body``) or one
    member of a stacked network; a fit that adopts a state trains nothing.
    ``stacked`` lists ``(members, first hidden width)`` of every stacked run.
    """
    from sknets import _epochs, _members
    from sknets._base import _BaseNet

    counts = {"runs": 0, "epochs": 0, "stacked": []}
    original = _BaseNet._fit_body

    def counting(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        counts["runs"] += 1
        counts["epochs"] += len(self.history_)
        return result

    new_run = _members.MemberRun.__init__

    def counting_run(self, module, specs, *args, **kwargs):
        new_run(self, module, specs, *args, **kwargs)
        counts["runs"] += len(specs)
        counts["stacked"].append((len(specs), int(module.weights[0].shape[-1])))

    epoch_end = _epochs.MemberMonitor.on_epoch_end

    def counting_epochs(self, net, **kwargs):
        counts["epochs"] += sum(self.live)  # every live member trained an epoch
        return epoch_end(self, net, **kwargs)

    monkeypatch.setattr(_BaseNet, "_fit_body", counting)
    monkeypatch.setattr(_members.MemberRun, "__init__", counting_run)
    monkeypatch.setattr(_epochs.MemberMonitor, "on_epoch_end", counting_epochs)
    return counts
