"""galacto training: synthetic galactograms, MONAI training, evaluation and ONNX export."""
