"""Evaluation metrics of the e4e paper (no I/O except fetching metric networks' weights).

  pairwise   per-image distortion: l2, lpips, id (ArcFace IR-SE50 or dlib's face-recognition ResNet)
  fid        Fréchet distance from running feature statistics (torch-fidelity's InceptionV3)
  swd        sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018)
  lec        Latent Editing Consistency (e4e, section 5)

A metric whose network cannot be obtained raises MetricUnavailable with a reason saying what to do.
"""
from __future__ import annotations


class MetricUnavailable(RuntimeError):
    """A metric cannot run here (weights missing and not downloadable, package missing); str: the reason."""
