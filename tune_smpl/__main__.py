import sys

from tune_smpl.cli import main

sys.exit(main())
