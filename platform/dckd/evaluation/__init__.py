"""Evaluation: the metric protocol (Y-channel PSNR/SSIM), benchmark scoring, whole-image restoration."""
