import sys

from pyserving.cli import main

sys.exit(main())
