import sys

from velokern.cli import main

sys.exit(main())
