"""``import``/``destroy``/``status`` refuse bad input with one line and leave nothing behind.

These run under a real libvirtd (started here when not running) but boot no
guest: the store holds a fake build (random data in a qcow2), which is
enough for every path that must fail before or at customisation.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer import libvirt_domain
from tests.conftest import appliance_name_for_test, run_cli
from tests.support.fake_build import make_fake_build
from tests.support.libvirtd import running_libvirtd
from tests.support.store_tree import lay_out_build

BOGUS_URI = "qemu:///system?socket=/nonexistent/libvirt-sock"


@pytest.fixture(scope="module")
def libvirt_uri() -> Iterator[str]:
    with running_libvirtd() as uri:
        yield uri


@pytest.fixture(scope="module")
def fake_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str, str]:
    """(store URL, release, build A, build B): two fake builds, latest -> B."""
    base = tmp_path_factory.mktemp("import-errors")
    build_a = make_fake_build(base / "a", data_mib=2)
    release, build_a_id = lay_out_build(base / "store", build_a, labels=())
    build_b = make_fake_build(base / "b", data_mib=2)
    _release, build_b_id = lay_out_build(base / "store", build_b)
    return f"file://{base / 'store'}", release, build_a_id, build_b_id


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "UNDERCLOUD_APPLIANCE_CACHE": str(tmp_path / "cache"),
        "UNDERCLOUD_APPLIANCE_STATE": str(tmp_path / "state"),
    }


def one_error_line(result, exit_code: int) -> str:
    assert result.returncode == exit_code, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def nothing_created(env: dict[str, str], name: str = "undercloud") -> bool:
    return not (Path(env["UNDERCLOUD_APPLIANCE_STATE"]) / name).exists()


def test_unknown_release_and_label(libvirt_uri, fake_store, env, tmp_path: Path) -> None:
    url, release, _a, _b = fake_store
    result = run_cli(
        "import",
        url,
        "--release",
        "nosuch",
        "--network",
        "user",
        "--connect",
        libvirt_uri,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert "'nosuch'" in one_error_line(result, 5)
    assert nothing_created(env)
    line = one_error_line(run_cli("fetch", url, "--release", "nosuch", check=False, env=env), 5)
    assert "'nosuch'" in line
    line = one_error_line(
        run_cli("fetch", url, "--release", release, "--label", "nope", check=False, env=env), 5
    )
    assert "'nope'" in line
    line = one_error_line(
        run_cli(
            "fetch",
            url,
            "--release",
            release,
            "--build",
            "20990101T000000Z-abcdef",
            check=False,
            env=env,
        ),
        5,
    )
    assert "20990101T000000Z-abcdef" in line


def test_unreachable_store(env) -> None:
    line = one_error_line(
        run_cli("fetch", "http://127.0.0.1:9", "--release", "debian-ci", check=False, env=env), 7
    )
    assert "127.0.0.1:9" in line and "connection refused" in line


def test_missing_ssh_key_file(fake_store, env, tmp_path: Path) -> None:
    url, release, _a, _b = fake_store
    missing = tmp_path / "no-such-key"
    result = run_cli(
        "import",
        url,
        "--release",
        release,
        "--ssh-key",
        str(missing),
        check=False,
        env=env,
        cwd=tmp_path,
    )
    line = one_error_line(result, 5)
    assert str(missing) in line
    assert nothing_created(env)
    assert not (tmp_path / "ssh.config").exists()


def test_libvirtd_not_reachable(fake_store, env, tmp_path: Path) -> None:
    url, release, _a, _b = fake_store
    result = run_cli(
        "import",
        url,
        "--release",
        release,
        "--connect",
        BOGUS_URI,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    line = one_error_line(result, 8)
    assert BOGUS_URI in line
    assert nothing_created(env)
    assert not Path(env["UNDERCLOUD_APPLIANCE_CACHE"]).exists(), "nothing downloaded first"
    one_error_line(run_cli("status", "undercloud", "--connect", BOGUS_URI, check=False, env=env), 8)


def test_name_used_by_a_foreign_domain(libvirt_uri, fake_store, env, tmp_path: Path) -> None:
    url, release, _a, _b = fake_store
    name = appliance_name_for_test("foreign")
    connection = libvirt_domain.connect(libvirt_uri)
    foreign = connection.defineXML(
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    try:
        result = run_cli(
            "import",
            url,
            "--release",
            release,
            "--name",
            name,
            "--network",
            "user",
            "--replace",
            check=False,
            env=env,
            cwd=tmp_path,
        )
        line = one_error_line(result, 8)
        assert "not created by undercloud-appliance" in line
        assert libvirt_domain.lookup(connection, name) is not None, "foreign domain kept"
        assert nothing_created(env, name)
        one_error_line(run_cli("destroy", name, check=False, env=env), 8)
        assert libvirt_domain.lookup(connection, name) is not None
    finally:
        foreign.undefine()


def test_other_build_needs_replace_and_destroy_removes_it(
    libvirt_uri, fake_store, env, tmp_path: Path
) -> None:
    """An appliance of build A exists (defined, not booted); importing B is refused."""
    url, release, build_a, build_b = fake_store
    name = appliance_name_for_test("replace")
    state_dir = Path(env["UNDERCLOUD_APPLIANCE_STATE"]) / name
    state_dir.mkdir(parents=True)
    (state_dir / "import.json").write_text(json.dumps({"build_id": build_a, "release": release}))
    connection = libvirt_domain.connect(libvirt_uri)
    connection.defineXML(
        libvirt_domain.domain_xml(
            libvirt_domain.DomainSpec(
                name=name,
                overlay=state_dir / "overlay.qcow2",
                memory_mib=256,
                vcpus=1,
                network="user",
                ssh_port=2222,
                console_log=state_dir / "console.log",
                metadata={
                    "build-id": build_a,
                    "release": release,
                    "sha256": "0" * 64,
                    "network": "user",
                    "port": "2222",
                    "puddle": "p1",
                },
            )
        )
    )
    try:
        result = run_cli(
            "import",
            url,
            "--release",
            release,
            "--name",
            name,
            "--network",
            "user",
            check=False,
            env=env,
            cwd=tmp_path,
        )
        line = one_error_line(result, 1)
        assert build_a in line and build_b in line and "--replace" in line
        status = json.loads(run_cli("status", name, "--json", env=env).stdout)
        assert status["build_id"] == build_a and status["state"] == "shut-off"
        assert status["puddle"] == "p1" and status["port"] == 2222
    finally:
        destroyed = run_cli("destroy", name, check=False, env=env)
    assert destroyed.returncode == 0, destroyed.stderr
    assert libvirt_domain.lookup(connection, name) is None
    assert not state_dir.exists()
    one_error_line(run_cli("destroy", name, check=False, env=env), 5)
    one_error_line(run_cli("status", name, check=False, env=env), 5)


def test_failed_customisation_leaves_nothing_behind(
    libvirt_uri, fake_store, env, tmp_path: Path
) -> None:
    """The fake image holds no OS: libguestfs fails after the overlay exists."""
    url, release, _a, _b = fake_store
    name = appliance_name_for_test("broken")
    result = run_cli(
        "import",
        url,
        "--release",
        release,
        "--name",
        name,
        "--network",
        "user",
        check=False,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    line = one_error_line(result, 1)
    assert "no operating system" in line
    assert nothing_created(env, name), "overlay and state directory removed"
    assert libvirt_domain.lookup(libvirt_domain.connect(libvirt_uri), name) is None
    cached = list(Path(env["UNDERCLOUD_APPLIANCE_CACHE"]).glob("*.qcow2"))
    assert len(cached) == 1, "the verified download stays cached"
    assert not (tmp_path / "ssh.config").exists()


def test_a_second_command_fails_while_an_import_holds_the_name(libvirt_uri, env) -> None:
    """Two processes: an import stuck fetching from a store that never answers, then destroy."""
    name = appliance_name_for_test("locked")
    with socket.create_server(("127.0.0.1", 0)) as silent_store:
        store_url = f"http://127.0.0.1:{silent_store.getsockname()[1]}"
        options = ["--release", "debian-ci", "--name", name, "--connect", libvirt_uri]
        importing = subprocess.Popen(
            [sys.executable, "-m", "undercloud_appliance_cli", "import", store_url, *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert importing.stderr is not None
            for line in importing.stderr:  # the lock is taken before the first step
                if "==> fetch" in line:
                    break
            else:
                raise AssertionError(f"import exited {importing.wait()} before fetching")
            line = one_error_line(
                run_cli("destroy", name, "--connect", libvirt_uri, check=False, env=env), 1
            )
            assert f"appliance '{name}' is busy: import (pid {importing.pid}, since" in line
            other = appliance_name_for_test("unlocked")
            line = one_error_line(
                run_cli("destroy", other, "--connect", libvirt_uri, check=False, env=env), 5
            )
            assert f"no appliance named '{other}'" in line
        finally:
            importing.terminate()
            importing.wait(timeout=30)
    # The lock went with the process that held it.
    line = one_error_line(
        run_cli("destroy", name, "--connect", libvirt_uri, check=False, env=env), 5
    )
    assert f"no appliance named '{name}'" in line
