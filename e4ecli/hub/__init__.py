"""Everything that turns published files into models.

  fetch, transfer   the one verified, resumable, locked downloader (mirrors, sha256, size, offline message)
  zoo               published checkpoints by name (zoo.toml) and the weights cache
  directions        the editing-direction registry and its files
  types             CheckpointError, LoadedCheckpoint, GENERATOR_CONFIG_KEY (shared by the loaders)
  checkpoints, ada  e4e/pSp/rosinality files and StyleGAN2-ADA pickles, read without running code
  networks          the weight files training needs (generator, IR-SE50, ArcFace, MoCo)
  perceptual        LPIPS with its backbone fetched (training loss and metric)
"""
