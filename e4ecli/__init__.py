"""e4ecli: batch StyleGAN2 inversion and editing with e4e (Tov et al., SIGGRAPH 2021).

Layout, bottom-up (a package imports only its own layer and the layers below; tests/test_import_graph.py
holds the order and that this list names every package and module):
  runtime.py, domains.py, alignment.py   devices, precision and process-wide switches; domain facts; FFHQ alignment maths
  errors.py   errors whose messages name settings ({beta}, {pca}, ...), spelled by the interface showing them
  models/     pure nn.Modules, no I/O (StyleGAN2, e4e/pSp encoders, ArcFace, StyleFlow, BiSeNet)
  files/      image/latent/video decoding, labels, output naming, atomic writes, manifests, provenance, guards
  hub/        checkpoints in and out (safely), the weights zoo, the one fetcher, the directions registry (its files,
              downloads and per-checkpoint caches)
  directions/   data, no code: the directions registry (registry.toml) hub/ reads
  edits/      latent edits (directions, StyleSpace, StyleFlow) over given tensors, no I/O; the direction-spec parser
  metrics/    FID, SWD, LEC, pairwise and temporal metrics
  refine/     latent optimisation, PTI, stitching, face masks
  landmarks.py, pasteback.py   landmark detectors; pasting edited crops back
  training/   the e4e training loop (yields events); inference code does not import it (one import left: see the test)
  pipelines/  pipeline objects built from a checkpoint and a frozen config (InvertPipeline, EditPipeline,
              RenderPipeline; configs and output names torch-free in pipelines.plans) and plain functions over
              iterables of items (video, eval, ...); direction specs checked and resolved (pipelines.directions)
  runs/       batch runs below the CLI: inputs, shards, lock, skip by fingerprint, manifest; yields events
  ui/         the Gradio page `e4e ui` serves
  cli/        the Typer app: parse options, show progress, print summaries, exit codes
  __main__.py   `python -m e4ecli`, the same app as the `e4e` command
"""

__version__ = "0.1.0"
