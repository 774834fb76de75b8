"""RQ jobs that synthesize datasets with the exported ONNX networks (paper Sec. 2.8); no torch."""
