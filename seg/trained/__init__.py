"""Everything that uses a trained model: rebuilding it from a checkpoint (``checkpoint``),
inference (``inference``), prediction into files (``prediction``) and ONNX export (``onnx``)."""
