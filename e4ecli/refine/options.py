"""How to refine an inversion (RefineOptions), free of torch: the CLI checks and plans a refinement before
any model loads; e4ecli.pipelines.refine runs it."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from e4ecli.refine.losses import Weights

MODES = ("w+", "w", "pti")
MAX_SHARED = 32  # --pti-shared: one generator for at most this many images


@dataclass(frozen=True)
class RefineOptions:
    """mode "w+"/"w": optimise the latent `steps` times; "pti": tune the generator `steps` times at the
    pivot, which is the encoder's code or (pivot "w+"/"w") that code refined `pivot_steps` times first.
    Weights default to e4e's (l2 1, LPIPS 0.8) for latents and PTI's (l2 1, LPIPS 1, locality 1) for PTI;
    reg: the pull toward the encoder's code (latents) / the locality regulariser (PTI)."""

    mode: str
    steps: int = 30
    lr: float | None = None
    l2: float = 1.0
    lpips: float | None = None
    id: float = 0.0
    reg: float | None = None
    pivot: str | None = None
    pivot_steps: int = 30
    shared: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown refinement {self.mode!r}; choose from {', '.join(MODES)}")
        if self.pivot is not None and self.pivot not in ("w+", "w"):
            raise ValueError(f"unknown pivot refinement {self.pivot!r}; choose w+ or w")
        if self.steps < 0 or self.pivot_steps < 0:
            raise ValueError("step counts must be >= 0")

    @property
    def is_pti(self) -> bool:
        return self.mode == "pti"

    def weights(self, pti: bool) -> "Weights":
        from e4ecli.refine.losses import Weights

        if pti:
            return Weights(l2=self.l2, lpips=1.0 if self.lpips is None else self.lpips, id=self.id, reg=1.0 if self.reg is None else self.reg)
        return Weights(l2=self.l2, lpips=0.8 if self.lpips is None else self.lpips, id=self.id, reg=0.001 if self.reg is None else self.reg)

    def latent_space(self) -> str | None:
        return self.pivot if self.is_pti else self.mode

    def settings(self) -> dict:
        """What the manifest records (and what a rerun compares): resolved defaults included."""
        from e4ecli.refine.latent import DEFAULT_LR as LATENT_LR
        from e4ecli.refine.pti import DEFAULT_LR as PTI_LR

        d = {"mode": self.mode, "steps": self.steps}
        space = self.latent_space()
        if space:
            w = self.weights(False)
            d["latent"] = {"space": space, "steps": self.pivot_steps if self.is_pti else self.steps,
                           "lr": self.lr if (self.lr is not None and not self.is_pti) else LATENT_LR[space], **asdict(w)}
        if self.is_pti:
            d["pti"] = {"lr": self.lr if self.lr is not None else PTI_LR, "shared": self.shared, "seed": self.seed, **asdict(self.weights(True))}
        return d
