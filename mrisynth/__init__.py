"""mrisynth: registered multimodal brain MRI with lesion labels, after Qu et al.

This package holds what training, the worker and the service share without torch: the naming
conventions, the BraTS data layer, the paper's Algorithms 1-3, the phantom, montages and the CLI.
"""
