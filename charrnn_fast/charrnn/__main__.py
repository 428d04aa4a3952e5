"""`python -m charrnn_fast.charrnn ...` (and `torchrun -m charrnn_fast.charrnn train ...`):
the same commands as the `charrnn-fast` console script."""

import sys

from charrnn_fast.charrnn.cli import main

sys.exit(main())
