"""The Ray layer: Ray Train workers, the TorchTrainer driver, Tune sweeps and job entrypoints.

It imports the library (``dckd``); the library never imports it.
"""
