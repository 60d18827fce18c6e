"""Bad input gives one clear error line, a non-zero exit and writes nothing.

Also: store credentials never appear in output, logs or errors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support.fake_build import make_fake_build
from tests.support.nginx import NginxServer, free_tcp_port
from tests.support.sshd import SshServer

RELEASE = "debian-ci"
PASSWORD = "hunter2-Very-Secret"


def assert_one_line_error(result, *expected: str) -> str:
    """-q leaves only the error on stderr: exactly one line, no traceback."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("undercloud-appliance: error: "), line
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in line, line
    return line


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() or path.is_symlink()]


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_fake_build(tmp_path / "build", RELEASE)


def test_unknown_store_scheme(build: Path) -> None:
    result = run_cli(
        "-q", "publish", str(build), "--store", "ftp://example.invalid/store", check=False
    )
    assert_one_line_error(result, "unsupported store URL scheme 'ftp'")


def test_unreachable_webdav_store(build: Path) -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}/store/"
    result = run_cli("-q", "publish", str(build), "--store", url, check=False)
    assert_one_line_error(result, "connection refused", "127.0.0.1")


def test_unreachable_ssh_store(build: Path, tmp_path: Path) -> None:
    url = f"ssh://root@127.0.0.1:{free_tcp_port()}{tmp_path}/store"
    env = {**os.environ, "UNDERCLOUD_APPLIANCE_SSH_COMMAND": "ssh -o BatchMode=yes"}
    result = run_cli("-q", "publish", str(build), "--store", url, check=False, env=env)
    assert_one_line_error(result, "ssh failed")


def test_missing_store_directory(build: Path, tmp_path: Path) -> None:
    result = run_cli(
        "-q", "publish", str(build), "--store", f"file://{tmp_path}/nowhere", check=False
    )
    assert_one_line_error(result, "store directory does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_missing_build_directory(store_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "-q", "publish", str(tmp_path / "no-build"), "--store", f"file://{store_root}", check=False
    )
    assert_one_line_error(result, "no-build", "no such build directory")
    assert files_under(store_root) == []


def test_manifest_size_does_not_match_image(build: Path, store_root: Path) -> None:
    with (build / "undercloud.qcow2").open("ab") as image:
        image.write(b"extra")
    result = run_cli("-q", "publish", str(build), "--store", f"file://{store_root}", check=False)
    assert_one_line_error(result, "file_size", "nothing published")
    assert list(store_root.iterdir()) == []


def test_manifest_sha256_does_not_match_image(build: Path, store_root: Path) -> None:
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["image"]["sha256"] = "0" * 64
    (build / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("-q", "publish", str(build), "--store", f"file://{store_root}", check=False)
    assert_one_line_error(result, "sha256", "manifest.json", "nothing published")
    # The staging directory was removed; only empty directories remain.
    assert files_under(store_root) == []
    assert list((store_root / RELEASE / ".staging").iterdir()) == []


def test_invalid_manifest(build: Path, store_root: Path) -> None:
    (build / "manifest.json").write_text("{not json")
    result = run_cli("-q", "publish", str(build), "--store", f"file://{store_root}", check=False)
    assert_one_line_error(result, "manifest.json", "not valid JSON")
    assert list(store_root.iterdir()) == []


@pytest.mark.parametrize("label", ["a/b", "..", "../current", "previous-current", "Current"])
def test_bad_label_names(build: Path, store_root: Path, label: str) -> None:
    run_cli("publish", str(build), "--store", f"file://{store_root}")
    build_id = json.loads((build / "manifest.json").read_text())["build_id"]
    before = sorted(files_under(store_root))
    result = run_cli(
        "-q",
        "promote",
        RELEASE,
        build_id,
        "--label",
        label,
        "--store",
        f"file://{store_root}",
        check=False,
    )
    assert_one_line_error(result, "invalid label")
    after = sorted(files_under(store_root))
    assert after == before


def test_promote_unknown_build(store_root: Path) -> None:
    result = run_cli(
        "-q",
        "promote",
        RELEASE,
        "20260101T000000Z-abcdef",
        "--label",
        "current",
        "--store",
        f"file://{store_root}",
        check=False,
    )
    assert_one_line_error(result, "no such build")


def test_list_unknown_release(store_root: Path) -> None:
    result = run_cli("-q", "list", "nope", "--store", f"file://{store_root}", check=False)
    assert_one_line_error(result, "no release 'nope'")


def test_default_store_from_environment(build: Path, store_root: Path) -> None:
    env = {**os.environ, "UNDERCLOUD_APPLIANCE_STORE": f"file://{store_root}"}
    run_cli("publish", str(build), env=env)
    build_id = json.loads((build / "manifest.json").read_text())["build_id"]
    assert (store_root / RELEASE / build_id / "BUILD_ID").is_file()


def test_embedded_default_store(build: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "UNDERCLOUD_APPLIANCE_STORE"}
    env["HOME"] = str(home)
    run_cli("publish", str(build), env=env)
    build_id = json.loads((build / "manifest.json").read_text())["build_id"]
    embedded = home / ".local/share/undercloud-appliance/store"
    assert (embedded / RELEASE / build_id / "BUILD_ID").is_file()


def test_credentials_never_printed(build: Path, store_root: Path) -> None:
    with NginxServer(store_root, dav=True, auth=("publisher", PASSWORD)) as http:
        # Wrong password from the environment: refused, password not shown.
        env = {
            **os.environ,
            "UNDERCLOUD_APPLIANCE_STORE_USER": "publisher",
            "UNDERCLOUD_APPLIANCE_STORE_PASSWORD": PASSWORD + "-wrong",
        }
        refused = run_cli(
            "-v", "publish", str(build), "--store", http.url + "/", check=False, env=env
        )
        assert refused.returncode != 0
        assert "401" in refused.stderr and "UNDERCLOUD_APPLIANCE_STORE_USER" in refused.stderr
        assert PASSWORD not in refused.stderr + refused.stdout

        # Password in the URL: works, and is never echoed (verbose logs included).
        url = http.url.replace("http://", f"http://publisher:{PASSWORD}@") + "/"
        clean_env = {
            k: v for k, v in os.environ.items() if not k.startswith("UNDERCLOUD_APPLIANCE_STORE")
        }
        published = run_cli("-v", "publish", str(build), "--store", url, env=clean_env)
        listing = run_cli("-v", "list", "--json", "--store", url, env=clean_env)
        for result in (published, listing):
            assert PASSWORD not in result.stdout + result.stderr
        assert "publisher@127.0.0.1" in listing.stdout

        # netrc works too, and an error then names the URL without secrets.
        netrc = build.parent / "netrc"
        netrc.write_text(f"machine 127.0.0.1 login publisher password {PASSWORD}\n")
        netrc.chmod(0o600)
        netrc_env = {**clean_env, "NETRC": str(netrc)}
        listed = run_cli("list", "--json", "--store", http.url + "/", env=netrc_env)
        assert json.loads(listed.stdout)["releases"][0]["release"] == RELEASE
        missing = run_cli("-q", "list", "nope", "--store", url, env=clean_env, check=False)
        line = assert_one_line_error(missing, "publisher@127.0.0.1")
        assert PASSWORD not in line

        # A server that fails: the error after retries still hides the password.
    url = f"http://publisher:{PASSWORD}@127.0.0.1:{free_tcp_port()}/"
    unreachable = run_cli("-v", "list", "--store", url, check=False)
    assert unreachable.returncode != 0
    assert PASSWORD not in unreachable.stderr + unreachable.stdout


def test_ssh_store_rejects_passwords(build: Path) -> None:
    result = run_cli(
        "-q", "publish", str(build), "--store", f"ssh://root:{PASSWORD}@127.0.0.1/srv", check=False
    )
    line = assert_one_line_error(result, "use ssh keys")
    assert PASSWORD not in line


def test_ssh_store_missing_directory(build: Path, tmp_path: Path) -> None:
    with SshServer() as server:
        env = {**os.environ, "UNDERCLOUD_APPLIANCE_SSH_COMMAND": server.ssh_command}
        result = run_cli(
            "-q",
            "publish",
            str(build),
            "--store",
            server.url(tmp_path / "absent"),
            check=False,
            env=env,
        )
    assert_one_line_error(result, "store directory does not exist")
    assert not (tmp_path / "absent").exists()
