"""What ``import`` prints last, and README.rst's "After import" showing the same."""

from __future__ import annotations

from pathlib import Path

from importer.handoff import next_steps

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSOLE_LOG = Path("~/.local/share/undercloud-appliance/appliances/undercloud/console.log")


def test_next_steps_name_the_cloud_the_status_update_and_destroy() -> None:
    lines = next_steps("undercloud", "ssh -F ssh.config undercloud", CONSOLE_LOG)
    assert lines == [
        "next steps:",
        "  ssh -F ssh.config undercloud  # then: export OS_CLOUD=undercloud "
        "(admin credentials: ~stack/.config/openstack/clouds.yaml)",
        f"  undercloud-appliance status undercloud  # console log: {CONSOLE_LOG}",
        "  undercloud-appliance update undercloud --puddle latest "
        "[--puddle-dir DIR | --puddle-base URL]",
        "  undercloud-appliance destroy undercloud",
    ]


def test_next_steps_use_the_name_and_ssh_command_given() -> None:
    lines = next_steps("uc-2", "ssh -F /work/ssh.config uc-2", Path("/state/uc-2/console.log"))
    assert lines[1].startswith("  ssh -F /work/ssh.config uc-2  # then: export OS_CLOUD=")
    assert lines[2].endswith("status uc-2  # console log: /state/uc-2/console.log")
    assert all("undercloud-appliance" not in line or "uc-2" in line for line in lines)


def test_readme_after_import_shows_what_import_prints() -> None:
    readme = (REPO_ROOT / "README.rst").read_text()
    section = readme.split("\nAfter import\n------------\n", 1)[1]
    block = [
        line.removeprefix("    ")
        for line in section.split("::\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    ]
    assert block == next_steps("undercloud", "ssh -F ssh.config undercloud", CONSOLE_LOG)
