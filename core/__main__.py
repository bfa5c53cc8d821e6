"""`python -m v2m ...` is the `v2m` command (and `torchrun -m v2m train ...` trains on several GPUs)."""

import sys

from v2m.cli.main import main

sys.exit(main())
