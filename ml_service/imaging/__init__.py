"""Image IO, preprocessing, tiling, postprocessing (instances, polygons, metrics) and output
formats: pure array-in, array-out functions."""
