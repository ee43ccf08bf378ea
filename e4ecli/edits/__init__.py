"""Latent editing: pure functions over W+ latent tensors (no I/O), reusable by pipelines and evaluation.

* `ops`: InterFaceGAN (additive), GANSpace (PCA coordinate moves), SeFa (closed-form factorisation
  of the generator's modulation weights), PCA of W, interpolation and easing.
* `specs`: `--direction` specs (registry names, files, `ganspace:C:S:E`, `sefa:K[:LAYERS]`) parsed
  into `Edit` objects and `--strength` values (numbers and `A:B:N` sweeps).
* `fit`: InterFaceGAN boundaries (linear SVM on latents with binary labels).

Shapes: latents (N, n_styles, 512); W codes (N, 512).
"""
