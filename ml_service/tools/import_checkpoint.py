"""Turn a PyTorch checkpoint into a lean, verified safetensors weight file.

    python -m ml_service.tools.import_checkpoint CKPT --model hrnet --variant full [--out DIR]

Accepts a bare state_dict or a training checkpoint (``model_state_dict``/``state_dict`` beside
optimizer state, epochs, ...); keeps the model tensors only, checks they fit the registry
architecture exactly, and writes ``<model>-<variant>.safetensors`` with its sidecar.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from models.errors import WeightsError
from models.registry import MODEL_NAMES, VARIANTS, get_spec
from models.weights import DEFAULT_WEIGHTS_DIR, import_checkpoint

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Import a PyTorch checkpoint as safetensors")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--model", choices=MODEL_NAMES, required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="full")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--note", default="", help="recorded in the sidecar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = import_checkpoint(
            args.checkpoint,
            get_spec(args.model, args.variant),
            args.out,
            dtype=DTYPES[args.dtype],
            note=args.note,
        )
    except WeightsError as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 2
    logging.getLogger(__name__).info("wrote %s and %s", paths.tensors, paths.sidecar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
