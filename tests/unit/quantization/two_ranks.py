"""Run a function on two gloo ranks in spawned processes and collect what each returns."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import HANG_GUARD_S


def _rank_main(rank: int, world: int, port: int, work: Callable[[int], Any], queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # Plain values only (numpy arrays are pickled by value; tensors would go through this
        # process's resource sharer, gone once it exits).
        queue.put((rank, work(rank)))
    except Exception as error:  # the test then fails with it instead of waiting for a result
        queue.put((rank, error))
        raise
    dist.barrier()
    dist.destroy_process_group()


def on_two_ranks(work: Callable[[int], Any]) -> dict[int, Any]:
    """``{rank: work(rank)}`` from two gloo ranks; ``work`` must be a module-level function."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_rank_main, args=(rank, 2, port, work, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    try:
        results = dict(queue.get(timeout=HANG_GUARD_S) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    failed = {rank: value for rank, value in results.items() if isinstance(value, Exception)}
    assert not failed, failed
    assert [process.exitcode for process in processes] == [0, 0]
    return results
