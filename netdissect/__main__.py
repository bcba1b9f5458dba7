import sys

from netdissect.cli import main

sys.exit(main())
