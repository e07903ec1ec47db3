"""Configuration shared by the doctests in sknets/ and the tests in tests/."""

import torch

# One intra-op thread: the test data are tiny, where torch's thread pool costs
# more than it saves, and on a loaded 2-core machine (or with pytest-xdist
# workers) more threads than free cores makes small ops far slower.
torch.set_num_threads(1)
