"""`e4e train`: the e4e training recipe (Tov et al. 2021, sections 5-6 and the original training code).

  options      every option, defined once (command line, --config file, checkpoint opts)
  data         image folders -> deterministic batches (the original transforms)
  losses       L2, LPIPS, identity (ArcFace / MoCo v2), delta regularisation, discriminator losses, R1
  progressive  the progressive schedule: which styles train at each step
  pool         W code pools for the discriminator
  checkpoint   official-format checkpoints with training state, atomic writes, the newest resumable one
  logs         metrics.jsonl, TensorBoard, image grids
  distributed  torchrun / DDP set-up
  loop         the trainer (the original Coach): events out, no printing
"""
