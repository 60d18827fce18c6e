import sys

from undercloud_appliance.cli import main

sys.exit(main())
