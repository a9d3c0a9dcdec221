"""``resourceConfig.cpu`` holds a job's thread pools to that many threads, and gives them back after."""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_info

from aiservice.infrastructure.jobs.worker import cpu_threads


def test_a_pytorch_job_with_a_cpu_limit_runs_on_that_many_threads_and_restores_them() -> None:
    before = torch.get_num_threads()
    with cpu_threads(0.5, "pytorch"):
        assert torch.get_num_threads() == 1  # a fraction of a CPU rounds up to a whole thread
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before


def test_without_a_cpu_limit_the_pools_are_left_alone() -> None:
    pools = [pool["num_threads"] for pool in threadpool_info()]
    with cpu_threads(None, "pytorch"):
        assert [pool["num_threads"] for pool in threadpool_info()] == pools
