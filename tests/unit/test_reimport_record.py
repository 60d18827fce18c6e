"""A no-op re-import's record (importer/imports.py ``import_record``)."""

from __future__ import annotations

from pathlib import Path

from importer.appliance_state import write_record
from importer.fetch import FetchedImage
from importer.imports import ImportContext, ImportOptions, import_record
from undercloud_appliance.steps import StepTimings


def test_reimport_record_keeps_the_smoke_results_of_the_import_it_repeats(
    tmp_path: Path,
) -> None:
    """``status`` after a no-op re-import still shows the first import's smoke results."""
    smoke = [{"command": "true", "returncode": 0, "seconds": 0.1, "output_tail": ""}]
    write_record(tmp_path, {"build_id": "20261203T110245Z-2caed8", "smoke": smoke})
    context = ImportContext(ImportOptions("uc", "file:///store", "debian-zed"), tmp_path)
    context.fetched = FetchedImage(
        "debian-zed", "20261203T110245Z-2caed8", "a" * 64, tmp_path / "image.qcow2", {},
        tmp_path / "manifest.json", 0, 0, True,
    )  # fmt: skip
    context.already_imported = True
    assert import_record(context, StepTimings())["smoke"] == smoke
    context.already_imported = False
    assert "smoke" not in import_record(context, StepTimings()), "a fresh import runs its own"
