"""mrisynth: registered multimodal brain MRI with lesion labels, after Qu et al.

This package holds what training, the worker and the service share without torch: the naming
conventions, the BraTS data layer, the paper's Algorithms 1-3, the phantom and montages. It is the
ground floor: it imports nothing of ``models``, ``worker``, ``service`` or ``cli`` (tests/test_imports.py).
"""
