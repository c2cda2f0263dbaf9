"""Inference runtimes: what runs one batch of a model on a device (PyTorch with its fast path,
ONNX Runtime, OpenVINO), one module or package each, behind the protocol in ``base`` and
registered by name in ``registry.RUNTIMES``. Adding a runtime is one module and one registry
line (docs/architecture.md, "Adding a runtime")."""
