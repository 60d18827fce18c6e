"""Before/after package versions of an update, as text and as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VersionDiff:
    """What an update changed: name -> version, name -> (before, after)."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    unchanged_count: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``changed`` maps name -> {"before": v1, "after": v2}."""
        return {
            "added": dict(sorted(self.added.items())),
            "removed": dict(sorted(self.removed.items())),
            "changed": {
                name: {"before": before, "after": after}
                for name, (before, after) in sorted(self.changed.items())
            },
            "unchanged_count": self.unchanged_count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionDiff:
        return cls(
            added=dict(data.get("added", {})),
            removed=dict(data.get("removed", {})),
            changed={
                name: (versions["before"], versions["after"])
                for name, versions in data.get("changed", {}).items()
            },
            unchanged_count=int(data.get("unchanged_count", 0)),
        )

    def as_text(self) -> str:
        """One line per change, aligned; a summary line last."""
        rows = [(name, before, "->", after) for name, (before, after) in self.changed.items()]
        rows += [(name, "(new)", "->", version) for name, version in self.added.items()]
        rows += [(name, version, "->", "(removed)") for name, version in self.removed.items()]
        rows.sort()
        lines = []
        if rows:
            widths = [max(len(row[column]) for row in rows) for column in range(3)]
            for name, before, arrow, after in rows:
                lines.append(
                    f"  {name:<{widths[0]}}  {before:<{widths[1]}} {arrow} {after}".rstrip()
                )
        lines.append(
            f"{len(self.changed)} upgraded/changed, {len(self.added)} added, "
            f"{len(self.removed)} removed, {self.unchanged_count} unchanged"
        )
        return "\n".join(lines) + "\n"


def diff_versions(before: Mapping[str, str], after: Mapping[str, str]) -> VersionDiff:
    """Compare two ``package name -> version`` maps (as in a manifest's ``packages``)."""
    added = {name: after[name] for name in after.keys() - before.keys()}
    removed = {name: before[name] for name in before.keys() - after.keys()}
    common = before.keys() & after.keys()
    changed = {name: (before[name], after[name]) for name in common if before[name] != after[name]}
    return VersionDiff(
        added=dict(sorted(added.items())),
        removed=dict(sorted(removed.items())),
        changed=dict(sorted(changed.items())),
        unchanged_count=len(common) - len(changed),
    )
