"""The shared contracts: puddle templates and labels, manifest, store layout."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.requirements import skip_or_fail
from undercloud_appliance import hypervisor, store_layout
from undercloud_appliance.errors import ApplianceError, NetworkError, NotFoundError
from undercloud_appliance.guest_packages import installed_package_versions
from undercloud_appliance.manifest import (
    FORMAT_NAME,
    Manifest,
    ManifestError,
    ManifestImage,
    dump_manifest,
    file_sha256,
    parse_manifest,
    puddle_section,
    read_manifest,
    write_manifest,
)
from undercloud_appliance.puddles import (
    TemplateError,
    render_repos,
    render_template,
    resolve_puddle,
    template_variables,
)
from undercloud_appliance.qcow2 import convert_to_qcow2, image_info, virtual_size

DEBIAN_PUDDLE = {
    "package_manager": "apt",
    "base_url": "",
    "id_pattern": r"[0-9]{4}-[0-9]{2}-[0-9]{2}\.[0-9]+",
    "default": "none",
    "repos": [{"name": "undercloud-puddle", "url": "{base_url}/{puddle_id}", "suite": "./"}],
    "labels": {"url": "{base_url}/labels/{label}", "pattern": r"^(?P<id>\S+)\s*$"},
}


def test_templates_render_slices_for_dlrn_paths() -> None:
    template = "{base_url}/{puddle_id[0:2]}/{puddle_id[2:4]}/{puddle_id}/delorean.repo"
    assert template_variables(template) == {"base_url", "puddle_id"}
    assert (
        render_template(template, {"base_url": "https://t/c9-zed", "puddle_id": "a1b2c3"})
        == "https://t/c9-zed/a1/b2/a1b2c3/delorean.repo"
    )


@pytest.mark.parametrize("template", ["{nope}/x", "{base_url/x", "x}", "{puddle_id[a:b]}"])
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        template_variables(template)


def test_missing_template_value_is_refused() -> None:
    with pytest.raises(TemplateError, match="puddle_id"):
        render_template("{base_url}/{puddle_id}", {"base_url": "http://x"})


def test_render_repos_for_a_pinned_id() -> None:
    puddle = {**DEBIAN_PUDDLE, "base_url": "http://p/zed"}
    (repo,) = render_repos(puddle, "2026-11-20.1", "zed")
    assert repo["url"] == "http://p/zed/2026-11-20.1"
    assert repo["suite"] == "./"


def test_no_puddle_by_default_and_ids_pass_through() -> None:
    assert resolve_puddle(DEBIAN_PUDDLE, None, "zed") is None
    assert resolve_puddle(DEBIAN_PUDDLE, "none", "zed") is None
    puddle = {**DEBIAN_PUDDLE, "base_url": "http://127.0.0.1:9/unused"}
    assert resolve_puddle(puddle, "2026-11-20.1", "zed") == "2026-11-20.1"


def test_puddle_without_base_url_is_refused() -> None:
    with pytest.raises(ApplianceError, match=r"no puddle\.base_url"):
        resolve_puddle(DEBIAN_PUDDLE, "latest", "zed")


@pytest.fixture
def label_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "latest").write_text("2026-11-21.2\n")
    (tmp_path / "labels" / "garbage").write_text("not-an-id\n")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path), **k
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_labels_resolve_over_http_and_file(label_server: str, tmp_path: Path) -> None:
    puddle = {**DEBIAN_PUDDLE, "base_url": label_server}
    assert resolve_puddle(puddle, "latest", "zed") == "2026-11-21.2"
    puddle = {**DEBIAN_PUDDLE, "base_url": f"file://{tmp_path}"}
    assert resolve_puddle(puddle, "latest", "zed") == "2026-11-21.2"


def test_label_errors(label_server: str) -> None:
    puddle = {**DEBIAN_PUDDLE, "base_url": label_server}
    with pytest.raises(NotFoundError, match="HTTP 404"):
        resolve_puddle(puddle, "no-such-label", "zed")
    with pytest.raises(NotFoundError, match="not a puddle id"):
        resolve_puddle(puddle, "garbage", "zed")
    unreachable = {**DEBIAN_PUDDLE, "base_url": "http://127.0.0.1:9"}
    with pytest.raises(NetworkError, match="cannot reach puddle server"):
        resolve_puddle(unreachable, "latest", "zed")


def minimal_manifest() -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": 1,
        "build_id": "20261122T000000Z-abcdef",
        "release": "debian-ci",
        "created": "2026-11-22T00:00:00Z",
        "profile": {},
        "distro": {},
        "puddle": {"id": None},
        "dib": {},
        "image": {
            "filename": "undercloud.qcow2",
            "format": "qcow2",
            "virtual_size": 1,
            "file_size": 1,
            "sha256": "0" * 64,
        },
        "packages": {},
        "timings": {},
    }


def test_manifest_round_trip_is_atomic(tmp_path: Path) -> None:
    write_manifest(tmp_path, minimal_manifest())
    assert read_manifest(tmp_path)["build_id"] == "20261122T000000Z-abcdef"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("image"), "missing field 'image'"),
        (lambda m: m.update(format="other"), "field 'format'"),
        (lambda m: m.update(format_version=99), "newer than"),
        (lambda m: m["image"].pop("sha256"), "image.sha256"),
        (lambda m: m.update(packages=[]), "field 'packages' has the wrong type"),
        (lambda m: m.update(input_digest=1), "field 'input_digest' has the wrong type"),
        (lambda m: m.update(recipe_digest=[]), "field 'recipe_digest' has the wrong type"),
    ],
)
def test_manifest_errors_name_the_field(tmp_path: Path, change, message: str) -> None:
    manifest = minimal_manifest()
    change(manifest)
    with pytest.raises(ManifestError, match=message):
        write_manifest(tmp_path, manifest)
    assert not (tmp_path / "manifest.json").exists()


def test_manifest_json_error_names_line() -> None:
    with pytest.raises(ManifestError, match=r"x\.json:2: not valid JSON"):
        parse_manifest('{\n"a": }', "x.json")


def full_manifest() -> dict:
    """A manifest as a build writes it, plus fields only some writers add."""
    return {
        **minimal_manifest(),
        "profile": {"name": "debian-ci", "file": "debian-ci.yaml", "resolved": {}, "origins": {}},
        "distro": {"family": "debian", "release": "bookworm", "os": {"type": "linux"}},
        "puddle": {
            "id": "2026-11-21.1",
            "requested": "current",
            "package_manager": "apt",
            "base_url": "http://puddles",
            "repos": [{"name": "undercloud-puddle", "url": "http://puddles/2026-11-21.1"}],
        },
        "dib": {"version": "3.43.0", "elements": ["debian-minimal"], "image_types": ["raw"]},
        "image": {**minimal_manifest()["image"], "compression": "zstd", "layer": "kept"},
        "packages": {"b": "1:2.0-1", "a": "1.0"},
        "undercloud_packages": ["a"],
        "timings": {"compress-image": 1.5},
        "smoke": {"passed": True, "ran_at": "2026-11-22T00:00:00Z", "results": []},
        "ironic_images": {
            "agent_version": "9.4.3",
            "constraints": "2023.1",
            "directory": "/srv/ironic/images",
            "files": {"ipa.kernel": {"kind": "ramdisk", "size": 1, "sha256": "0" * 64}},
        },
        "input_digest": "sha256:" + "ab" * 32,
        "recipe_digest": "sha256:" + "cd" * 32,
        "promotions": [{"label": "stable", "forced": True}],
        "updated_from": {"build_id": "20261121T000000Z-012345", "puddle_id": None},
    }


def test_typed_manifest_round_trips_every_field() -> None:
    data = full_manifest()
    manifest = Manifest.from_dict(data)
    assert manifest.image.compression == "zstd"
    assert manifest.image.extra == {"layer": "kept"}
    assert manifest.extra == {"updated_from": data["updated_from"]}
    assert list(manifest.packages) == ["a", "b"]
    assert manifest.to_dict() == data
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    # The typed value is a copy: changing it leaves the dict it came from alone.
    manifest.puddle["repos"].clear()
    assert data["puddle"]["repos"]


def test_typed_manifest_writes_and_reads_the_same_json(tmp_path: Path) -> None:
    manifest = Manifest.from_dict(full_manifest())
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path) == manifest
    assert read_manifest(tmp_path) == full_manifest()
    text = (tmp_path / "manifest.json").read_text()
    assert text == dump_manifest(manifest) == dump_manifest(full_manifest())
    assert text.startswith('{\n  "build_id"'), "sorted keys, two-space indent"


def test_minimal_manifest_gains_only_the_optional_fields_with_empty_values() -> None:
    assert Manifest.from_dict(minimal_manifest()).to_dict() == {
        **minimal_manifest(),
        "image": {**minimal_manifest()["image"], "compression": None},
        "undercloud_packages": [],
        "smoke": None,
        "ironic_images": None,
        "input_digest": None,
        "recipe_digest": None,
        "promotions": [],
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "x.json: top level must be a JSON object"),
        ({**minimal_manifest(), "timings": None}, "x.json: field 'timings' has the wrong type"),
        ({**minimal_manifest(), "format_version": 2}, "x.json: format_version 2 is newer than"),
        (
            {**minimal_manifest(), "image": {**minimal_manifest()["image"], "file_size": "1"}},
            "x.json: field 'image.file_size' is missing or has the wrong type",
        ),
    ],
)
def test_typed_parse_is_the_validator(data, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data, "x.json")
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(data), "x.json")


def test_constructed_manifest_is_validated_when_written(tmp_path: Path) -> None:
    manifest = Manifest.from_dict(minimal_manifest())
    manifest.build_id = None  # type: ignore[assignment]
    with pytest.raises(ManifestError, match="field 'build_id' has the wrong type"):
        manifest.write(tmp_path)
    assert not list(tmp_path.iterdir())


def test_constructor_fills_format_and_created() -> None:
    image = ManifestImage(virtual_size=10, file_size=5, sha256="f" * 64)
    manifest = Manifest(
        build_id="20261122T000000Z-abcdef",
        release="debian-ci",
        profile={},
        distro={},
        puddle=puddle_section(
            puddle_id=None, requested=None, package_manager="apt", base_url="", repos=[]
        ),
        dib={},
        image=image,
        packages={},
        timings={},
    )
    data = manifest.to_dict()
    assert data["format"] == FORMAT_NAME and data["format_version"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["created"])
    assert data["image"]["filename"] == "undercloud.qcow2" and data["image"]["format"] == "qcow2"
    assert data["puddle"] == {
        "id": None,
        "requested": None,
        "package_manager": "apt",
        "base_url": "",
        "repos": [],
    }
    assert Manifest.from_dict(data) == manifest


def test_successor_is_a_new_build_of_the_same_profile() -> None:
    parent = Manifest.from_dict(full_manifest())
    image = ManifestImage(virtual_size=20, file_size=6, sha256="e" * 64, compression="zstd")
    child = parent.successor(
        build_id="20261123T000000Z-bcdef0",
        puddle={**parent.puddle, "id": "2026-11-23.1"},
        image=image,
        packages={"a": "1.1"},
        extra={"update": {"mode": "offline"}},
    )
    assert (child.build_id, child.image, child.packages) == (
        "20261123T000000Z-bcdef0",
        image,
        {"a": "1.1"},
    )
    assert child.smoke is None and child.created != "2026-11-22T00:00:00Z"
    # Not made from its parent's inputs alone: no build cache may take it for them.
    assert parent.input_digest and child.input_digest is None
    # ... but made from the same recipe, on another puddle.
    assert child.recipe_digest == parent.recipe_digest == "sha256:" + "cd" * 32
    assert (child.profile, child.distro, child.dib) == (parent.profile, parent.distro, parent.dib)
    assert child.extra == {
        "updated_from": parent.extra["updated_from"],
        "update": {"mode": "offline"},
    }
    assert parent.build_id == "20261122T000000Z-abcdef" and parent.packages == {
        "a": "1.0",
        "b": "1:2.0-1",
    }
    Manifest.from_dict(child.to_dict())


def require_qemu_img() -> None:
    if shutil.which("qemu-img") is None:
        skip_or_fail("qemu-img is not installed (scripts/host-packages.txt: qemu-utils)")


@pytest.fixture
def raw_disk(tmp_path: Path) -> Path:
    require_qemu_img()
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as handle:
        handle.write(b"appliance" * 100_000)  # compressible, under 1 MiB
        handle.truncate(3 * 2**20)
    return raw


@pytest.mark.parametrize("progress_label", [None, "qemu-img convert"])
def test_convert_to_qcow2_keeps_the_size_and_compresses(
    raw_disk: Path, progress_label: str | None
) -> None:
    image = raw_disk.with_name("undercloud.qcow2")
    convert_to_qcow2(
        raw_disk,
        image,
        source_format="raw",
        compress=True,
        compression_type="zstd",
        progress_label=progress_label,
    )
    info = image_info(image)
    assert info["format"] == "qcow2"
    assert info["format-specific"]["data"]["compression-type"] == "zstd"
    assert virtual_size(image) == 3 * 2**20
    assert image.stat().st_size < 900_000, "compressed and sparse"
    plain = raw_disk.with_name("plain.qcow2")
    convert_to_qcow2(image, plain, source_format="qcow2", compress=False)
    assert virtual_size(plain) == 3 * 2**20
    assert image_info(plain)["format-specific"]["data"]["compression-type"] == "zlib"


def test_image_described_from_the_file(raw_disk: Path) -> None:
    image = raw_disk.with_name("undercloud.qcow2")
    convert_to_qcow2(raw_disk, image, source_format="raw", compress=False)
    described = ManifestImage.of_file(image, compression=None)
    assert described.virtual_size == 3 * 2**20
    assert described.file_size == image.stat().st_size
    assert described.sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
    assert described.sha256 == file_sha256(image)


def test_qemu_img_failures_raise_the_callers_error(tmp_path: Path) -> None:
    require_qemu_img()
    missing = tmp_path / "missing.raw"
    with pytest.raises(NotFoundError, match=r"qemu-img convert failed: .*missing\.raw"):
        convert_to_qcow2(
            missing,
            tmp_path / "x.qcow2",
            source_format="raw",
            compress=False,
            error_type=NotFoundError,
        )
    with pytest.raises(NotFoundError, match=r"qemu-img convert failed: .*missing\.raw"):
        convert_to_qcow2(
            missing,
            tmp_path / "x.qcow2",
            source_format="raw",
            compress=False,
            progress_label="convert",
            error_type=NotFoundError,
        )
    with pytest.raises(ApplianceError, match=r"qemu-img info failed: .*missing\.raw"):
        virtual_size(missing)
    with pytest.raises(ManifestError, match=r"qemu-img info failed"):
        ManifestImage.of_file(missing, compression=None)


def test_installed_package_versions_write_epoch_and_release_as_dpkg_and_rpm_do() -> None:
    applications = [
        {"app2_name": "plain", "app2_epoch": 0, "app2_version": "2.0", "app2_release": ""},
        {"app2_name": "libc6", "app2_epoch": 0, "app2_version": "2.36", "app2_release": "9"},
        {"app2_name": "openssh", "app2_epoch": 1, "app2_version": "9.2p1", "app2_release": "2"},
        {"app2_name": "epoch-only", "app2_epoch": 2, "app2_version": "1.0", "app2_release": ""},
        {"app2_name": "sparse", "app2_version": "3"},
    ]
    assert installed_package_versions(applications) == {
        "plain": "2.0",
        "libc6": "2.36-9",
        "openssh": "1:9.2p1-2",
        "epoch-only": "2:1.0",
        "sparse": "3",
    }
    assert installed_package_versions([]) == {}


def test_store_names() -> None:
    assert store_layout.build_path("debian-zed", "20261122T041800Z-1a2b3c") == (
        "debian-zed/20261122T041800Z-1a2b3c"
    )
    assert store_layout.label_path("debian-zed", "stable") == "debian-zed/stable"
    for bad_label in ("../x", "a/b", "..", "Stable", "1abc", ""):
        with pytest.raises(ApplianceError):
            store_layout.check_label(bad_label)
    for bad_release in ("../etc", "a/b", "..x", ""):
        with pytest.raises(ApplianceError):
            store_layout.check_release(bad_release)
    with pytest.raises(ApplianceError):
        store_layout.check_build_id("latest")


def test_accelerator_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert hypervisor._cpu_has_virtualisation("flags\t: fpu vmx sse\n")
    assert hypervisor._cpu_has_virtualisation("flags\t: fpu svm\n")
    assert not hypervisor._cpu_has_virtualisation("flags\t: fpu hypervisor sse\n")
    hypervisor.accelerator.cache_clear()
    monkeypatch.setenv(hypervisor.ACCEL_ENV, "tcg")
    assert hypervisor.accelerator() == "tcg"
    assert hypervisor.libvirt_domain_type() == "qemu"
    assert "tcg,thread=multi" in hypervisor.qemu_accel_args()
    hypervisor.accelerator.cache_clear()
    monkeypatch.setenv(hypervisor.ACCEL_ENV, "kvm")
    assert hypervisor.libvirt_domain_type() == "kvm"
    hypervisor.accelerator.cache_clear()
    monkeypatch.setenv(hypervisor.ACCEL_ENV, "fast")
    with pytest.raises(ApplianceError, match="expected 'kvm' or 'tcg'"):
        hypervisor.accelerator()
    hypervisor.accelerator.cache_clear()
