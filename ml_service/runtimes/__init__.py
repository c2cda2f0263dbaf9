"""Inference runtimes: what runs one batch of a model on a device (PyTorch with its fast path,
ONNX Runtime, OpenVINO)."""
