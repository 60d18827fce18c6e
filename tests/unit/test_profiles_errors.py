"""Bad release profiles: one line naming file:line, the setting and the value."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builders.profiles import load_profile, validate_profile_statically
from tests.unit.test_profiles_fixtures import make_profiles_dir, write_profile
from undercloud_appliance.errors import ProfileError

HEAD = "extends: bases/base\nrelease: zed\ndistro:\n  release: bookworm\n"  # lines 1-4

# (id, text of release-profiles/bad.yaml, the error line must start with this, and contain that)
BAD_PROFILES = [
    ("unknown-top", HEAD + "flavour: x\n", "bad.yaml:5: flavour: unknown setting", ""),
    (
        "unknown-nested",
        HEAD + "image:\n  hostnme: x\n",
        "bad.yaml:6: image.hostnme: unknown setting",
        "did you mean 'hostname'",
    ),
    (
        "unknown-repo-field",
        HEAD + "puddle:\n  repos:\n    - name: x\n      url: '{base_url}'\n      urls: y\n",
        "bad.yaml:9: puddle.repos[1].urls: unknown setting",
        "",
    ),
    (
        "wrong-type",
        HEAD + "image:\n  size_gib: big\n",
        "bad.yaml:6: image.size_gib: expected an integer",
        "'big'",
    ),
    (
        "float-for-integer",
        HEAD + "image:\n  size_gib: 4.5\n",
        "bad.yaml:6: image.size_gib: expected an integer, got float 4.5",
        "",
    ),
    ("out-of-range", HEAD + "image:\n  size_gib: 1\n", "bad.yaml:6: image.size_gib:", "2..2048"),
    (
        "provisioning-address-without-prefix",
        HEAD + "provisioning:\n  address: 192.168.24.1\n",
        "bad.yaml:6: provisioning.address: '192.168.24.1' is not an IPv4 address/prefix",
        "",
    ),
    (
        "provisioning-dhcp-outside-network",
        HEAD + "provisioning:\n  address: 10.0.0.1/24\n",
        "bad.yaml:5: provisioning.dhcp_start: '192.168.24.100' is not a host address",
        "10.0.0.0/24",
    ),
    (
        "provisioning-dhcp-range-backwards",
        HEAD + "provisioning:\n  dhcp_end: 192.168.24.50\n",
        "bad.yaml:6: provisioning.dhcp_end: '192.168.24.50' comes before",
        "192.168.24.100",
    ),
    (
        "provisioning-dhcp-range-holds-own-address",
        HEAD + "provisioning:\n  dhcp_start: 192.168.24.1\n",
        "bad.yaml:6: provisioning.dhcp_start: '192.168.24.1' is the appliance's own",
        "",
    ),
    (
        "bad-enum",
        HEAD + "image:\n  compression: gzip\n",
        "bad.yaml:6: image.compression: 'gzip' is not one of",
        "zlib, zstd, none",
    ),
    (
        "family-enum",
        HEAD + "  family: suse\n",
        "bad.yaml:5: distro.family: 'suse' is not one of",
        "",
    ),
    (
        "missing-required",
        "extends: bases/base\ndistro:\n  release: bookworm\n",
        "bad.yaml:1: release: missing required setting",
        "",
    ),
    (
        "missing-section",
        "release: zed\n",
        "bad.yaml:1: distro.family: missing required setting",
        "",
    ),
    (
        "missing-required-repo-url",
        HEAD + "puddle:\n  repos:\n    - name: other\n",
        "bad.yaml:7: puddle.repos[1].url: missing required setting",
        "",
    ),
    (
        "package-name",
        HEAD + "undercloud:\n  packages:\n    - keystone\n    - ironic-api\n"
        "    - 'keystone; rm -rf /'\n",
        "bad.yaml:9: undercloud.packages[3]: 'keystone; rm -rf /' is not a valid package name",
        "",
    ),
    (
        "hostname",
        HEAD + "image:\n  hostname: under cloud\n",
        "bad.yaml:6: image.hostname: 'under cloud' is not a valid hostname",
        "",
    ),
    (
        "hostname-dash",
        HEAD + "image:\n  hostname: -undercloud\n",
        "bad.yaml:6: image.hostname:",
        "not a valid hostname",
    ),
    (
        "user",
        HEAD + "image:\n  user: 'stack$(id)'\n",
        "bad.yaml:6: image.user:",
        "not a valid POSIX user name",
    ),
    (
        "element",
        HEAD + "elements: ['vm;reboot']\n",
        "bad.yaml:5: elements[0]: 'vm;reboot' is not a valid element name",
        "",
    ),
    (
        "base-element",
        HEAD + "  base_element: 'debian minimal'\n",
        "bad.yaml:5: distro.base_element:",
        "not a valid element name",
    ),
    (
        "kernel-arg",
        HEAD + "image:\n  kernel_args: ['quiet $(reboot)']\n",
        "bad.yaml:6: image.kernel_args[1]: 'quiet $(reboot)' is not a valid kernel argument",
        "",
    ),
    (
        "template-variable",
        HEAD + "puddle:\n  repos:\n    - name: x\n      url: '{base_url}/{puddel_id}'\n",
        "bad.yaml:8: puddle.repos[1].url:",
        "unknown variable(s) puddel_id",
    ),
    (
        "template-label-in-repo",
        HEAD + "puddle:\n  repos:\n    - name: x\n      url: '{base_url}/{label}'\n",
        "bad.yaml:8: puddle.repos[1].url:",
        "label, which is not available here",
    ),
    (
        "template-brace",
        HEAD + "puddle:\n  labels:\n    url: '{base_url/x'\n",
        "bad.yaml:7: puddle.labels.url:",
        "brace",
    ),
    (
        "labels-pattern-group",
        HEAD + "puddle:\n  labels:\n    pattern: '^(\\S+)$'\n",
        "bad.yaml:7: puddle.labels.pattern:",
        "(?P<id>...)",
    ),
    (
        "id-pattern-regex",
        HEAD + "puddle:\n  id_pattern: '([0-9'\n",
        "bad.yaml:6: puddle.id_pattern:",
        "not a valid regular expression",
    ),
    (
        "package-manager-family",
        HEAD + "puddle:\n  package_manager: dnf\n",
        "bad.yaml:6: puddle.package_manager: 'dnf' does not fit distro.family 'debian'",
        "",
    ),
    (
        "dnf-field-on-apt",
        HEAD + "puddle:\n  repos:\n    - name: x\n      url: '{base_url}'\n      gpgcheck: true\n",
        "bad.yaml:9: puddle.repos[1].gpgcheck: only applies when puddle.package_manager is 'dnf'",
        "",
    ),
    (
        "float-release",
        "extends: bases/base\nrelease: 17.10\ndistro:\n  release: bookworm\n",
        "bad.yaml:2: release: expected a string, got float 17.1",
        "quote it",
    ),
    ("name-is-derived", HEAD + "name: other\n", "bad.yaml:5: name:", "derived from the file name"),
    (
        "environment-name",
        HEAD + "environment:\n  PATH: /bin\n",
        "bad.yaml:6: environment.PATH: 'PATH' is not a valid DIB_* variable name",
        "",
    ),
    (
        "environment-value",
        HEAD + "environment:\n  DIB_RELEASE: 9\n",
        "bad.yaml:6: environment.DIB_RELEASE: expected a string, got integer 9",
        "quote it",
    ),
    ("mirror-url", HEAD + "  mirror: deb.debian.org\n", "bad.yaml:5: distro.mirror:", "not a URL"),
    (
        "multi-line-command",
        HEAD + "undercloud:\n  smoke_commands:\n    - |\n      true\n      false\n",
        "bad.yaml:7: undercloud.smoke_commands[0]:",
        "not a valid shell command",
    ),
    (
        "null-value",
        HEAD + "undercloud:\n  packages:\n",
        "bad.yaml:6: undercloud.packages: expected a list, got no value (null)",
        "",
    ),
    (
        "section-not-mapping",
        HEAD + "image: [qcow2]\n",
        "bad.yaml:5: image: expected a mapping",
        "",
    ),
    ("yaml-syntax", HEAD + "image: [unclosed\n", "bad.yaml:6: YAML syntax error", ""),
    ("yaml-tab", HEAD + "image:\n\tsize_gib: 4\n", "bad.yaml:6: YAML syntax error", ""),
    ("duplicate-key", HEAD + "release: antelope\n", "bad.yaml:5: release: set twice", ""),
    ("merge-key", HEAD + "image:\n  <<: {size_gib: 4}\n", "bad.yaml:6:", "merge keys (<<)"),
    ("unknown-tag", HEAD + "image:\n  size_gib: !big 4\n", "bad.yaml:6:", "unsupported YAML tag"),
    ("bad-explicit-int", HEAD + "image:\n  size_gib: !!int four\n", "bad.yaml:6:", "cannot read"),
    ("top-level-list", "- release: zed\n", "bad.yaml:1: a profile must be a mapping", ""),
    ("two-documents", HEAD + "---\nrelease: zed\n", "bad.yaml:5: YAML syntax error", ""),
    ("recursive-alias", HEAD + "elements: &a [*a]\n", "bad.yaml:5:", "alias"),
    (
        "extends-missing",
        "extends: bases/nope\nrelease: zed\n",
        "bad.yaml:1: extends: 'bases/nope' does not exist (release-profiles/bases/nope.yaml)",
        "",
    ),
    (
        "extends-traversal",
        "extends: ../../etc/passwd\nrelease: zed\n",
        "bad.yaml:1: extends: '../../etc/passwd' is not a profile name",
        "",
    ),
    (
        "extends-loop",
        "extends: bases/loop-a\nrelease: zed\n",
        "release-profiles/bases/loop-b.yaml:1: extends: loop: release-profiles/bad.yaml -> "
        "release-profiles/bases/loop-a.yaml -> release-profiles/bases/loop-b.yaml -> "
        "release-profiles/bases/loop-a.yaml",
        "",
    ),
]


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    profiles_dir = make_profiles_dir(tmp_path)
    write_profile(profiles_dir, "bases/loop-a", "extends: bases/loop-b\n")
    write_profile(profiles_dir, "bases/loop-b", "extends: bases/loop-a\n")
    return profiles_dir


@pytest.mark.parametrize(
    ("text", "start", "contains"),
    [case[1:] for case in BAD_PROFILES],
    ids=[case[0] for case in BAD_PROFILES],
)
def test_bad_profile_is_one_line_naming_file_line_and_setting(
    profiles_dir: Path, text: str, start: str, contains: str
) -> None:
    path = profiles_dir / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as raised:
        validate_profile_statically(load_profile("bad", profiles_dir))
    message = str(raised.value)
    assert "\n" not in message
    if not start.startswith("release-profiles/"):
        start = "release-profiles/" + start
    assert message.startswith(start), message
    assert contains in message, message
    if "string" not in message:
        assert "quote it" not in message


def test_missing_element_is_found_statically(profiles_dir: Path) -> None:
    write_profile(profiles_dir, "bad", HEAD + "elements: [no-such-element]\n")
    profile = load_profile("bad", profiles_dir)
    with pytest.raises(ProfileError) as raised:
        validate_profile_statically(profile)
    assert str(raised.value).startswith(
        "release-profiles/bad.yaml:5: elements[0]: 'no-such-element' is not a "
        "diskimage-builder element"
    )


def test_label_default_needs_a_labels_url(profiles_dir: Path) -> None:
    write_profile(
        profiles_dir, "bad", HEAD + "puddle:\n  default: latest\n  labels:\n    url: ''\n"
    )
    with pytest.raises(ProfileError, match=r"bad.yaml:6: puddle.default: 'latest' is a label"):
        validate_profile_statically(load_profile("bad", profiles_dir))


def test_rendered_repo_url_must_be_a_url(profiles_dir: Path) -> None:
    write_profile(
        profiles_dir,
        "bad",
        HEAD + "puddle:\n  base_url: http://puddles.example.invalid\n  repos: !replace\n"
        "    - name: x\n      url: '{puddle_id}'\n",
    )
    with pytest.raises(ProfileError, match=r"bad.yaml:9: puddle.repos\[0\].url: renders to"):
        validate_profile_statically(load_profile("bad", profiles_dir))


def test_unreadable_bytes(profiles_dir: Path) -> None:
    (profiles_dir / "bad.yaml").write_bytes(b"release: \xff\xfe\n")
    with pytest.raises(ProfileError, match=r"^release-profiles/bad.yaml: cannot read: not UTF-8"):
        load_profile("bad", profiles_dir)


# -- through the command line ---------------------------------------------------------------


def run_cli(profiles_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UNDERCLOUD_APPLIANCE_PROFILES": str(profiles_dir)}
    return subprocess.run(
        [sys.executable, "-m", "undercloud_appliance_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_cli_validate_bad_file_exits_2_with_one_line(profiles_dir: Path) -> None:
    path = write_profile(profiles_dir, "bad", HEAD + "image:\n  size_gib: big\n")
    result = run_cli(profiles_dir, "profiles", "validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == (
        f"error {path}: release-profiles/bad.yaml:6: image.size_gib: "
        "expected an integer, got string 'big'\n"
    )
    assert (
        result.stderr == "undercloud-appliance: error: 1 of 1 profiles invalid: " + str(path) + "\n"
    )


def test_cli_show_bad_profile_exits_2_with_one_line(profiles_dir: Path) -> None:
    write_profile(profiles_dir, "bad", "extends: bases/nope\n")
    result = run_cli(profiles_dir, "profiles", "show", "bad")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        "undercloud-appliance: error: release-profiles/bad.yaml:1: extends: 'bases/nope' "
        "does not exist (release-profiles/bases/nope.yaml)\n"
    )


def test_cli_validate_all_reports_each_profile(profiles_dir: Path) -> None:
    write_profile(profiles_dir, "bad", HEAD + "flavour: x\n")
    result = run_cli(profiles_dir, "profiles", "validate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("error bad: release-profiles/bad.yaml:5: flavour: unknown setting")
    assert lines[1] == "ok    good"
    assert len(lines) == 2


def test_cli_validate_and_show_good_profiles(profiles_dir: Path) -> None:
    result = run_cli(profiles_dir, "profiles", "validate", "good")
    assert (result.returncode, result.stdout) == (0, "ok    good\n")
    result = run_cli(profiles_dir, "profiles", "show", "good")
    assert result.returncode == 0
    assert re.search(r"^release: zed +# release-profiles/good.yaml:2$", result.stdout, re.M)
