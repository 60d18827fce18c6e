"""Changing an imported appliance: puddle updates, upgrades, rollback.

- :mod:`importer.updates.online`: ``update NAME`` and ``upgrade NAME`` of a
  running appliance over ssh, behind a libvirt snapshot;
- :mod:`importer.updates.rollback`: ``rollback NAME`` to such a snapshot;
- :mod:`importer.updates.local_puddles`: ``--puddle-dir``, a local puddle
  tree served to the guest for the length of one update.

What they share with derived builds (``builders.derived``) lives in
``undercloud_appliance``: ``puddle_target`` (the pinned puddle, the URLs a
guest reaches, how a failure reads), ``package_managers``,
``puddle_history`` and ``version_diff`` (the records an update leaves).
"""
