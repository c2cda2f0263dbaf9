"""CellSeg Serve inference engine: image IO, pre/postprocessing, batching and profiling."""
