"""qemu-img as the project uses it: write a qcow2, read its virtual size.

Builds and derived builds (builders) and the tests' fake builds all
write their ``undercloud.qcow2`` through ``convert_to_qcow2`` and read its
size through ``virtual_size``, so the options and the error messages are
the same everywhere.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tqdm import tqdm

from undercloud_appliance.errors import ApplianceError

# ``qemu-img convert -p`` prints "    (12.34/100%)" with carriage returns.
QEMU_PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


def convert_to_qcow2(
    source: Path,
    destination: Path,
    *,
    source_format: str,
    compress: bool,
    compression_type: str | None = None,
    progress_label: str | None = None,
    error_type: type[ApplianceError] = ApplianceError,
) -> None:
    """Write ``source`` as a sparse qcow2 at ``destination`` (qemu-img skips zero blocks).

    ``compress`` compresses the clusters; ``compression_type`` (``zlib`` or
    ``zstd``) picks the algorithm, qemu-img's default (zlib) when None.
    With ``progress_label`` a progress bar with that label follows qemu-img's
    ``-p`` output.  A failure raises ``error_type`` with qemu-img's message.
    """
    options = ["-f", source_format, "-O", "qcow2"]
    if compress:
        options.append("-c")
        if compression_type:
            options += ["-o", f"compression_type={compression_type}"]
    paths = [str(source), str(destination)]
    if progress_label is None:
        result = subprocess.run(
            ["qemu-img", "convert", "-q", *options, *paths],
            capture_output=True,
            text=True,
            check=False,
        )
        returncode, stderr = result.returncode, result.stderr
    else:
        returncode, stderr = _convert_with_progress(
            ["qemu-img", "convert", "-p", *options, *paths], progress_label
        )
    if returncode != 0:
        raise error_type(f"qemu-img convert failed: {stderr.strip()}")


def _convert_with_progress(command: list[str], label: str) -> tuple[int, str]:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=0
    )
    assert process.stdout is not None
    with tqdm(total=100, unit="%", desc=label, leave=False, disable=None) as bar:
        buffer = ""
        while chunk := process.stdout.read(64):
            buffer += chunk
            matches = QEMU_PROGRESS.findall(buffer)
            if matches:
                bar.update(float(matches[-1]) - bar.n)
                buffer = buffer[-32:]
    stderr = process.stderr.read() if process.stderr else ""
    return process.wait(), stderr


def image_info(image: Path, *, error_type: type[ApplianceError] = ApplianceError) -> dict[str, Any]:
    """What ``qemu-img info`` says about ``image`` (``format``, ``virtual-size``, ...)."""
    result = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise error_type(f"qemu-img info failed: {result.stderr.strip() or result.stdout.strip()}")
    return json.loads(result.stdout)


def virtual_size(image: Path, *, error_type: type[ApplianceError] = ApplianceError) -> int:
    """The disk size ``image`` presents to a guest, in bytes."""
    return int(image_info(image, error_type=error_type)["virtual-size"])
