"""Changing an appliance after its build: puddle updates, upgrades, rollback.

- :mod:`importer.updates.online`: ``update NAME`` and ``upgrade NAME`` of a
  running appliance over ssh, behind a libvirt snapshot;
- :mod:`importer.updates.rollback`: ``rollback NAME`` to such a snapshot;
- :mod:`importer.updates.offline`: ``update --offline BUILD_DIR``, a new
  build from an old one with libguestfs;
- :mod:`undercloud_appliance.puddle_target`: what both updaters share (the
  pinned puddle, the URLs a guest reaches, how a failure reads);
- :mod:`undercloud_appliance.puddle_history` and
  :mod:`undercloud_appliance.version_diff`: the records an update leaves.
"""
