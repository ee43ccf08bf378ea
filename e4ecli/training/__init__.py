"""`e4e train`: the e4e training recipe (Tov et al. 2021, sections 5-6 and the original training code).

  options      every option, defined once: TrainConfig (typed, frozen, the defaults) and the table of flags
               (command line, --config file); the original `opts` dict only at the boundary (checkpoints, opt.json)
  plan         what a run is: fresh, --resume or --resume-training-from-ckpt (reads, never writes)
  build        the run's components as one frozen bundle: models, losses, data, optimisers
  data         image folders -> deterministic batches (the original transforms)
  losses       the terms: L2, LPIPS, identity (ArcFace / MoCo v2), delta regularisation, discriminator losses, R1
  loss         their composition: the encoder's loss; the discriminator's codes, its loss and R1 (losses
               compute and call backward; every optimiser step is the loop's)
  progressive  the progressive schedule: which styles train at each step
  pool         W code pools for the discriminator
  checkpoint   official-format checkpoints with training state: payload, restore, rank state, optimiser
               layouts, atomic writes, the newest resumable one
  logs         metrics.jsonl, TensorBoard, image grids
  loop         the trainer (the original Coach): optimiser steps, schedule, validation, checkpoints; events
               out, no printing; messages name options by field (`batch_size`), the CLI words them as flags
"""
