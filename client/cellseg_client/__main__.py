"""``python -m cellseg_client``: the ``cellseg`` command line."""

import sys

from cellseg_client.cli.main import main

sys.exit(main())
