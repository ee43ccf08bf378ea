"""Beyond the encoder: optimise an inversion against its image (no I/O, no CLI words).

  losses   per-image reconstruction terms (l2, LPIPS, identity), the pull toward the encoder's code,
           PTI's locality regulariser, the learning-rate schedule
  latent   latent refinement: Adam on W+ (or one W code) from the encoder's code
  pti      pivotal tuning: Adam on the generator's synthesis weights at fixed pivots

Images are (N, 3, H, W) in [-1, 1]; targets are the preprocessed inputs (the encoder's input size),
renders are cropped to the domain and area-averaged to that size before any loss, as e4e trains.
"""
