import sys

from esper_ab.cli import main

sys.exit(main())
