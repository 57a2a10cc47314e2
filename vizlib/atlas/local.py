"""The local engine: one process, no extra service; decoding overlapped with inference on all cores.

A thread pool reads and decodes the images of the next batches (Pillow and
the resize release the GIL) while this thread runs the model on the current
one (TensorFlow spreads each call over the cores). At most ``PREFETCH``
batches are decoded ahead, so memory does not grow with the dataset.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

from vizlib.atlas.pipeline import assemble, batch_stats, read_and_decode

#: Batches decoded ahead of the model.
PREFETCH = 2


def run_local(job: Any, model: Any, todo: Sequence[int], commit: Callable[[Any], None],
              tick: Callable[[int], None], *, workers: Optional[int] = None) -> None:
    """Run the shards ``todo`` of ``job`` with ``model`` in this process, committing each when done."""
    from vizlib.atlas.job import ShardCollector

    size, channels, ref = job.input_size, job.channels, job.listing.ref
    work = [(s, b) for s in todo for b in job.batches(s)]
    n_workers = max(1, int(workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="atlas-decode") as pool:
        def submit(batch: range) -> list:
            return [pool.submit(read_and_decode, ref, i, name, size, channels)
                    for i, name in zip(batch, job.names(batch))]

        queue: deque = deque()
        it = iter(work)
        for item in it:
            queue.append((item, submit(item[1])))
            if len(queue) > PREFETCH:
                break
        collector: Optional[ShardCollector] = None
        try:
            while queue:
                (shard, batch), futures = queue.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append((nxt, submit(nxt[1])))
                decoded = assemble(list(batch), [f.result() for f in futures], size, channels)
                stats = batch_stats(model, decoded.pixels, job.layers)
                if collector is None or collector.shard != shard:
                    collector = ShardCollector(job, shard)
                collector.add(decoded.ids, decoded.digests, decoded.failures, stats, batch_start=batch.start)
                if collector.done:
                    commit(collector)
                    collector = None
                tick(len(batch))
        finally:
            for _, futures in queue:
                for f in futures:
                    f.cancel()
