"""The PyTorch runtime (``runtime.py``) and its fast path: precision, channels_last and
torch.compile (``fastpath.py``), the stem kept in fp32 under reduced precision
(``mixed_precision.py``)."""

from ml_service.runtimes.torch.runtime import TorchRuntime

__all__ = ["TorchRuntime"]
