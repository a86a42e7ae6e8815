"""Read a copick project with copick itself and print what it sees as JSON (stdout).

Run with the side venv (copick 1.31 pins zarr<3, so it cannot live in the main venv)::

    .venv-copick/bin/python tests/copick_check.py ROOT/copick_config.json

``tests/test_copick_export.py`` compares the output with the run store. Everything is read
through copick's API (``copick.from_file``, ``run.voxel_spacings``, ``tomogram.numpy()``,
``tomogram.zarr()``, ``picks.numpy()``, ``segmentation.numpy()``), not from the files.
Volumes are reported by shape, dtype and the SHA-256 of their C-order little-endian bytes.
"""
from __future__ import annotations

import hashlib
import json
import sys
import warnings

import numpy as np


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


def volume(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": digest(a),
            "values": np.asarray(a).ravel()[:5].tolist()}


def main(config: str) -> dict:
    import copick
    import zarr

    warnings.simplefilter("error", UserWarning)        # a name copick would sanitize is a failure
    root = copick.from_file(config)
    out: dict = {"copick_version": copick.__version__, "objects": [], "runs": {}}
    for o in root.pickable_objects:
        out["objects"].append({"name": o.name, "label": o.label, "is_particle": o.is_particle,
                               "radius": o.radius, "pdb_id": o.pdb_id, "color": list(o.color),
                               "is_filament": bool(getattr(o.meta, "is_filament", False)),
                               "metadata": o.meta.metadata})
    for run in root.runs:
        r: dict = {"voxel_spacings": {}, "picks": {}, "segmentations": [], "filaments": {}}
        for vs in run.voxel_spacings:
            tomos = {}
            for t in vs.tomograms:
                group = zarr.open(t.zarr(), mode="r")
                levels = sorted(group.array_keys(), key=int)
                tomos[t.tomo_type] = {**volume(t.numpy()), "levels": {k: volume(group[k][...]) for k in levels},
                                      "compressor": group["0"].compressor.get_config(),
                                      "chunks": list(group["0"].chunks),
                                      "multiscales": dict(group.attrs)["multiscales"]}
            r["voxel_spacings"][f"{vs.voxel_size:.3f}"] = tomos
        for p in run.picks:
            loc, T = p.numpy()
            r["picks"][p.pickable_object_name] = {
                "user_id": p.user_id, "session_id": p.session_id, "from_tool": p.from_tool,
                "trust_orientation": p.trust_orientation, "count": len(p.points),
                "locations": np.asarray(loc).tolist(), "transforms": np.asarray(T).tolist(),
                "instance_ids": [int(pt.instance_id) for pt in p.points]}
        for s in run.segmentations:
            group = zarr.open(s.zarr(), mode="r")
            r["segmentations"].append({"name": s.name, "is_multilabel": s.is_multilabel, "voxel_size": s.voxel_size,
                                       "user_id": s.user_id, "session_id": s.session_id, **volume(s.numpy()),
                                       "levels": {k: volume(group[k][...]) for k in sorted(group.array_keys(), key=int)}})
        for f in getattr(run, "filaments", []) or []:
            r["filaments"][f.pickable_object_name] = [
                {"instance_id": fil.instance_id, "n_points": len(fil.points)} for fil in f.filaments]
        out["runs"][run.name] = r
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
