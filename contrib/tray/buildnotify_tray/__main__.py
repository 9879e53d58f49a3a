import sys

from buildnotify_tray.app import main

sys.exit(main())
