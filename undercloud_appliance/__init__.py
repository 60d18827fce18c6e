"""Shared contracts of the undercloud appliance tool.

The three working packages (``builders``, ``publish``, ``importer``) never
import each other.  What they share lives here: the manifest format, the
store layout, the error type the CLI turns into one-line messages, timed
steps, and how this host runs virtual machines (KVM or TCG).
"""

__version__ = "0.1.0"
