"""Latent editing: pure functions over W+ latent tensors (no I/O), reusable by pipelines and evaluation.
Files, downloads and caches are `hub.directions`'s; `pipelines.directions` turns a spec into an `Edit` with them.

* `ops`: InterFaceGAN (additive), GANSpace (PCA coordinate moves), SeFa (closed-form factorisation
  of the generator's modulation weights), PCA of W, interpolation and easing.
* `syntax`: the one parser of direction specs (registry names, files, `ganspace:C:S:E`, `sefa:K[:LAYERS]`,
  `styleflow:NAME`, `stylespace:L:C`, `text:TARGET`) into typed specs, torch-free.
* `specs`: `Edit` (a resolved direction, applied to latents) and strength values (numbers and `A:B:N` sweeps).
* `stylespace`, `prompts`, `styleflow`: StyleSpace / StyleCLIP maths and prompt checks; StyleFlow conditions.
* `fit`: InterFaceGAN boundaries (linear SVM on latents with binary labels).

Shapes: latents (N, n_styles, 512); W codes (N, 512).
"""
