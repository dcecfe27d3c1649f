"""Results appear at `--output_dir` only when complete.

A run writes into a hidden sibling staging folder and renames it into place at the end, after the
`_SUCCESS` marker; a killed or failed run leaves the previous output (or nothing) at `--output_dir`.
Object stores have no atomic directory rename, so for non-local paths the run writes in place and
`_SUCCESS`, written last, is what marks the output complete.
"""
from __future__ import annotations

import glob
import os
import shutil
import uuid

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.inputs.local_files import is_local
from ecg_common.layout import SUCCESS_MARKER

_STAGING_INFIX = ".staging-"


def staging_dir_for(output_dir: str) -> str:
    """A fresh folder beside `output_dir` (same file system, so the final rename is atomic)."""
    if not is_local(output_dir):
        return output_dir
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    return os.path.join(parent, f".{name}{_STAGING_INFIX}{uuid.uuid4().hex[:12]}")


def publish(staging_dir: str, output_dir: str) -> None:
    """Marks the staged output complete and moves it to `output_dir`, replacing an earlier run."""
    with FileSystems.create(FileSystems.join(staging_dir, SUCCESS_MARKER)) as marker:
        marker.write(b"")
    if staging_dir == output_dir:
        return
    output_dir = os.path.abspath(output_dir)
    previous = f"{staging_dir}.previous"
    if os.path.exists(output_dir):
        os.rename(output_dir, previous)
    os.rename(staging_dir, output_dir)
    shutil.rmtree(previous, ignore_errors=True)


def leftover_staging_dirs(parent: str, name_pattern: str) -> list[str]:
    """Staging folders in local `parent` for outputs named like `name_pattern` (a glob): what runs
    killed before publishing left behind. Only a caller that knows no run is writing may remove them."""
    if not is_local(parent):
        return []
    return sorted(glob.glob(os.path.join(os.path.abspath(parent), f".{name_pattern}{_STAGING_INFIX}*")))


def discard(staging_dir: str, output_dir: str) -> None:
    """Removes a failed run's staging folder (never the published output)."""
    if staging_dir != output_dir:
        shutil.rmtree(staging_dir, ignore_errors=True)
