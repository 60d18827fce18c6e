import sys

from undercloud_appliance_cli import main

sys.exit(main())
