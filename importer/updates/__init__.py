"""Changing an appliance after its build: puddle updates, upgrades, rollback.

- :mod:`importer.updates.online`: ``update NAME`` and ``upgrade NAME`` of a
  running appliance over ssh, behind a libvirt snapshot;
- :mod:`importer.updates.rollback`: ``rollback NAME`` to such a snapshot;
- :mod:`importer.updates.offline`: ``update --offline BUILD_DIR``, a new
  build from an old one with libguestfs;
- :mod:`importer.updates.puddle_target`: what both updaters share (the
  pinned puddle, the URLs a guest reaches, how a failure reads);
- :mod:`importer.updates.puddle_history` and
  :mod:`importer.updates.version_diff`: the records an update leaves.
"""
