"""A store or puddle URL's password is never shown, published or left readable.

``profiles show``, the manifest a build writes, the manifest ``publish``
uploads and every error line leave the password out (the user name stays);
files on the host that keep a URL are readable by their owner only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

import undercloud_appliance_cli as cli
from builders.profiles import load_profile
from importer.appliance_state import write_record
from importer.cache import ImageCache
from tests.conftest import run_cli as run_cli_as_user
from tests.support.fake_build import fake_manifest, make_fake_build
from tests.unit.test_cli_errors import run_with
from undercloud_appliance.errors import NetworkError
from undercloud_appliance.manifest import MANIFEST_NAME, Manifest, puddle_section
from undercloud_appliance.puddles import render_repos
from undercloud_appliance.stores.credentials import (
    redact_url,
    redact_urls_in,
    redact_urls_in_text,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret"
PUDDLE_BASE = f"http://puddler:{SECRET}@127.0.0.1:9/puddles"
SHOWN_BASE = "http://puddler@127.0.0.1:9/puddles"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli_as_user(*args, check=False, env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    """The shipped profiles plus ``secret``: debian-ci with a password in its puddle URL."""
    profiles = tmp_path / "release-profiles"
    shutil.copytree(REPO_ROOT / "release-profiles", profiles)
    (profiles / "secret.yaml").write_text(
        f"extends: debian-ci\npuddle:\n  base_url: {PUDDLE_BASE}\n", encoding="utf-8"
    )
    return profiles


def test_redact_url_keeps_everything_but_the_password() -> None:
    assert redact_url(PUDDLE_BASE) == SHOWN_BASE
    assert redact_url("http://u:p@ss@host/a@b") == "http://u@host/a@b"
    assert redact_url("https://host:8443/x?a=b:c@d") == "https://host:8443/x?a=b:c@d"
    # Malformed URLs are named in errors too: no parse error, no password.
    assert redact_url(f"http://u:{SECRET}@[::1") == "http://u@[::1"
    assert redact_url(f"http://u:{SECRET}@h:99999/") == "http://u@h:99999/"
    assert redact_urls_in_text(f"at '{PUDDLE_BASE}/x': no ({PUDDLE_BASE})") == (
        f"at '{SHOWN_BASE}/x': no ({SHOWN_BASE})"
    )
    assert redact_urls_in({"a": [f"deb {PUDDLE_BASE} ./", 1, None]}) == {
        "a": [f"deb {SHOWN_BASE} ./", 1, None]
    }


def test_profiles_show_hides_the_password(profiles_dir: Path) -> None:
    env = {"UNDERCLOUD_APPLIANCE_PROFILES": str(profiles_dir)}
    for extra in ((), ("--json",)):
        shown = run_cli("profiles", "show", "secret", *extra, env=env)
        assert shown.returncode == 0, shown.stderr
        assert SECRET not in shown.stdout + shown.stderr
        assert SHOWN_BASE in shown.stdout


def test_profiles_validate_error_hides_the_password(profiles_dir: Path) -> None:
    (profiles_dir / "broken.yaml").write_text(
        f"extends: debian-ci\npuddle:\n  base_url: 'http://puddler:{SECRET}@h/x y'\n"
    )
    env = {"UNDERCLOUD_APPLIANCE_PROFILES": str(profiles_dir)}
    result = run_cli("profiles", "validate", "broken", env=env)
    assert result.returncode == 2
    assert "puddle.base_url" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def secret_manifest(image: Path, profiles_dir: Path) -> Manifest:
    """A manifest as a build of the ``secret`` profile records it (base URL and repos)."""
    resolved = load_profile("secret", profiles_dir).data
    manifest = Manifest.from_dict(fake_manifest(image))
    manifest.profile["resolved"] = resolved
    manifest.puddle = puddle_section(
        puddle_id="2026-11-21.1",
        requested="latest",
        package_manager="apt",
        base_url=PUDDLE_BASE,
        repos=render_repos(resolved["puddle"], "2026-11-21.1", "zed"),
    )
    return manifest


def test_written_manifest_has_no_password(tmp_path: Path, profiles_dir: Path) -> None:
    build = make_fake_build(tmp_path / "build")
    manifest = secret_manifest(build / "undercloud.qcow2", profiles_dir)
    assert PUDDLE_BASE in json.dumps(manifest.to_dict()), "the test must carry a password"
    manifest.write(build)
    text = (build / MANIFEST_NAME).read_text()
    assert SECRET not in text
    written = json.loads(text)
    assert written["puddle"]["base_url"] == SHOWN_BASE
    assert written["puddle"]["repos"][0]["url"] == f"{SHOWN_BASE}/2026-11-21.1"
    assert written["profile"]["resolved"]["puddle"]["base_url"] == SHOWN_BASE


def test_publish_never_uploads_a_password(tmp_path: Path, profiles_dir: Path) -> None:
    """A build directory written before manifests were redacted (or edited by hand)."""
    build = make_fake_build(tmp_path / "build")
    manifest = secret_manifest(build / "undercloud.qcow2", profiles_dir)
    (build / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict()))
    store = tmp_path / "store"
    store.mkdir()
    result = run_cli("publish", str(build), "--store", f"file://{store}")
    assert result.returncode == 0, result.stderr
    published = list(store.glob(f"*/*/{MANIFEST_NAME}"))
    assert len(published) == 1
    assert SECRET not in published[0].read_text()
    assert json.loads(published[0].read_text())["puddle"]["base_url"] == SHOWN_BASE


def test_puddle_error_hides_the_password(tmp_path: Path, profiles_dir: Path) -> None:
    build = make_fake_build(tmp_path / "build")
    secret_manifest(build / "undercloud.qcow2", profiles_dir).write(build)
    result = run_cli(
        "build",
        "debian-ci",
        "--from",
        str(build),
        "--puddle",
        "latest",
        "--puddle-base",
        PUDDLE_BASE,
    )
    assert result.returncode == 7, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert f"{SHOWN_BASE}/labels/latest" in errors[0]
    assert SECRET not in result.stdout + result.stderr


def test_malformed_store_url_is_one_line_without_the_password(tmp_path: Path) -> None:
    env = {"UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache")}
    for url in (f"http://u:{SECRET}@[::1", f"http://u:{SECRET}@127.0.0.1:99999/"):
        result = run_cli("fetch", url, "--release", "debian-ci", env=env)
        assert result.returncode == 4, result.stderr
        assert result.stderr.count("\n") == 1 and "not a valid store URL" in result.stderr
        assert SECRET not in result.stderr


def test_any_error_line_and_log_line_is_redacted(monkeypatch, capsys) -> None:
    def fail(args) -> None:
        raise NetworkError(f"cannot reach {PUDDLE_BASE}/x")

    assert run_with(monkeypatch, fail) == 7
    assert capsys.readouterr().err == f"undercloud-appliance: error: cannot reach {SHOWN_BASE}/x\n"
    record = logging.makeLogRecord({"msg": "retrying %s", "args": (PUDDLE_BASE,)})
    assert cli.RedactingFormatter("%(message)s").format(record) == f"retrying {SHOWN_BASE}"


def test_files_keeping_urls_are_owner_only(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache").ensure()
    sha = "a" * 64
    cache.write_partial_state(sha, {"relpath": "r/b/undercloud.qcow2", "validator": '"x"'})
    assert stat.S_IMODE(cache.partial_state_path(sha).stat().st_mode) == 0o600
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    write_record(state_dir, {"store_url": f"http://u:{SECRET}@store/"})
    assert stat.S_IMODE((state_dir / "import.json").stat().st_mode) == 0o600
