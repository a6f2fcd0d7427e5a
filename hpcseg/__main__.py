import sys

from hpcseg.cli import main

sys.exit(main())
