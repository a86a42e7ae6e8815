"""Fuse each task of a Dask array's last layer with the input tasks only it reads.

Why (issue 15, measured 2026-12-02 on the 2-core VM, ``faket/000`` of the demo alone): the NST
stage's task for a batch of tilts reads nine small blocks (CONTENT, NOISY, five Gram matrices,
the style mean and std), each its own task on whichever worker held the Zarr array's handle.
With one thread per worker, the read a worker's next NST task needed often sat behind the
*other* worker's 1.5 s NST task, so each worker waited 0.2-0.7 s between NST tasks (one
tomogram's NST took 17 s of wall time for 26 s of work on 2 cores). Dask's own optimisations
do not help here: ``optimize_blockwise`` does not fuse a reader into a blockwise task that
contracts indices (the Gram matrices' ``a, b``), and low-level fusion only fuses linear chains,
while a reader's input, the array handle, is shared by every reader. :func:`fuse_private_inputs`
moves the readers into the task that consumes them (``dask._task_spec.GraphNode.fuse``, Dask's
own subgraph fusion); a shared input that is plain data (a Zarr array handle) is copied into
each task instead of being a dependency. The task then reads, computes and hands its result to
its writer on the same worker, with no transfer and nothing to wait for.
"""
from __future__ import annotations

from collections import defaultdict

import dask.array as da
from dask._task_spec import DataNode, GraphNode, convert_legacy_graph
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

__all__ = ["fuse_private_inputs"]


def fuse_private_inputs(arr: da.Array) -> da.Array:
    """``arr`` with each of its tasks fused with the upstream tasks only that task needs.

    For every output key of ``arr`` the upstream tasks whose every dependent is already part
    of that key's fused task are absorbed (recursively), and dependency-free plain data nodes
    (array handles) are copied in even when shared. Anything else (an input two tasks read,
    an upstream computation with other dependents) stays a separate task. The result computes
    the same values with the same keys; the annotations of ``arr``'s last layer (e.g. the
    ``GPU=1`` resource) are kept.

    Parameters
    ----------
    arr : dask.array.Array
        Any Dask array; its graph is materialised (fine for per-tilt-batch graphs of a few
        hundred tasks, which is what this is for).

    Returns
    -------
    dask.array.Array
        Same name, chunks, dtype and meta as ``arr``; one layer.
    """
    hlg = arr.__dask_graph__()
    layer = hlg.layers.get(arr.name)
    annotations = getattr(layer, "annotations", None)
    dsk: dict = convert_legacy_graph(dict(hlg))
    deps = {k: set(node.dependencies) for k, node in dsk.items()}
    dependents: dict = defaultdict(set)
    for k, ds in deps.items():
        for d in ds:
            dependents[d].add(k)
    out_keys = list(flatten(arr.__dask_keys__()))
    new: dict = {}
    for key in out_keys:
        sub = {key: dsk[key]}
        grew = True
        while grew:  # until no more upstream task qualifies (a task's dependents may join late)
            grew = False
            for d in {d for k in sub for d in deps[k]} - sub.keys():
                if d not in dsk:
                    continue
                node = dsk[d]
                if (isinstance(node, DataNode) and not deps[d]) or dependents[d] <= sub.keys():
                    sub[d] = node
                    grew = True
        new[key] = GraphNode.fuse(*sub.values(), key=key) if len(sub) > 1 else dsk[key]
    # what the fused tasks still need from outside, and what that needs in turn
    needed = [d for node in new.values() for d in node.dependencies]
    while needed:
        d = needed.pop()
        if d in new or d not in dsk:
            continue
        new[d] = dsk[d]
        needed.extend(deps[d])
    graph = HighLevelGraph({arr.name: MaterializedLayer(new, annotations=annotations)},
                           {arr.name: set()})
    return da.Array(graph, arr.name, arr.chunks, meta=arr._meta)
