"""``python -m ml_service.train``: the command of ``ml_service.training.train``."""

from ml_service.training.train import main

if __name__ == "__main__":
    main()
