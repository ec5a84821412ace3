"""Shipping a distilled student: where it comes from, ONNX/TorchScript export, serving.

``sources`` resolves what a user names (a registry address, a run checkpoint, a weights file
with its preset, a bare preset) to a :class:`dckd.models.Restorer`; ``export`` writes it as ONNX
or TorchScript and verifies the file against PyTorch; ``runtime`` runs an exported ONNX file
behind the same contract as the PyTorch network.
"""
