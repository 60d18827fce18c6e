"""The shared contracts: puddle templates and labels, manifest, store layout."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from undercloud_appliance import hypervisor, store_layout
from undercloud_appliance.errors import ApplianceError, NetworkError, NotFoundError
from undercloud_appliance.manifest import (
    FORMAT_NAME,
    ManifestError,
    parse_manifest,
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
