import sys

from deepobs.cli import main

sys.exit(main())
