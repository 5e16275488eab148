"""OpenMP's wait policy for this process and its children, set before torch loads.

By default torch's OpenMP threads spin while they wait for work (an active wait). When another
process trains on the same cores (a shared workstation, a cluster login node, two `run`s on one
machine), spinning threads take the cores from the threads that have work, and throughput drops
several-fold. A passive wait (threads sleep) costs a little quiet throughput and keeps most of it
under load. The wait policy decides only how idle threads wait, never how work is split, so
results are unchanged. Standard library only: it must run before anything imports torch.
"""

from __future__ import annotations

import os

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_wait() -> None:
    """Set OMP_WAIT_POLICY=PASSIVE unless the environment already sets a policy.

    OpenMP reads the variable once, when torch loads it: call this before importing torch.
    Worker processes and SLURM tasks started from here inherit it.
    """
    os.environ.setdefault(WAIT_POLICY, "PASSIVE")
