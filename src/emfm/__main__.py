import sys

from emfm.cli import main

sys.exit(main())
