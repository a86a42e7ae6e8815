"""The outputs of ``faket-dask score``: checked before anything is read, written atomically.

:func:`check_outputs` refuses bad output paths up front; :func:`write_report` writes the JSON
report (``docs/scoring.md`` describes every field) and :func:`write_confusion_csv` the confusion
matrix (:func:`confusion_table`), whose figure goes to :func:`confusion_png`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError, OutputExistsError
from ..kernels.scoring_result import ScoreResult


def confusion_png(csv_path: str | Path) -> Path:
    """The figure written beside the confusion CSV (same name, ``.png``)."""
    return Path(csv_path).with_suffix(".png")


def check_outputs(out: str | Path | None, confusion: str | Path | None, *, overwrite: bool) -> None:
    """Refuse outputs that exist (without ``overwrite``), lie in a missing directory, or (the
    confusion matrix) are not ``.csv`` — before anything is read."""
    paths = []
    if out is not None:
        paths.append(Path(out))
    if confusion is not None:
        if Path(confusion).suffix.lower() != ".csv":
            raise InputError(f"--confusion {confusion}: give a .csv path (the figure is written beside it as .png)")
        paths += [Path(confusion), confusion_png(confusion)]
    if len({p.resolve() for p in paths}) < len(paths):
        raise InputError("--out and --confusion must be different files")
    for p in paths:
        if not p.parent.is_dir():
            raise InputError(f"{p}: directory {p.parent} does not exist")
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p}: exists; pass --overwrite to replace it")


def _atomic_write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_report(result: ScoreResult, path: str | Path) -> Path:
    """``result.to_dict()`` as indented JSON (``docs/scoring.md`` describes every field)."""
    return _atomic_write(Path(path), json.dumps(result.to_dict(), indent=2) + "\n")


def confusion_table(result: ScoreResult):
    """The confusion matrix as a DataFrame: index ``truth`` (true classes, then ``background``:
    picks on no particle), columns the picked class (then ``background``: never found)."""
    import pandas as pd

    df = pd.DataFrame(result.confusion, index=pd.Index(result.labels, name="truth"), columns=result.labels)
    return df


def write_confusion_csv(result: ScoreResult, path: str | Path) -> Path:
    """Write :func:`confusion_table` as CSV (first column ``truth``)."""
    return _atomic_write(Path(path), confusion_table(result).to_csv())
