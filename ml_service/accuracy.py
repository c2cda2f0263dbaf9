"""``python -m ml_service.accuracy``: the command of ``ml_service.tools.accuracy``."""

from ml_service.tools.accuracy import main

if __name__ == "__main__":
    main()
