import sys

from ctac.cli import main

sys.exit(main())
