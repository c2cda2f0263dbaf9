"""The request path a worker runs per image: engine, dynamic batcher, memory-aware sizer,
model pool, CPU stages and the calibration used at start-up."""
