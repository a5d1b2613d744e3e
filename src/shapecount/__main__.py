import sys

from shapecount.cli import main

sys.exit(main())
