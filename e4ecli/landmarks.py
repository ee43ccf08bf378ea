"""Face landmark backends: an RGB photo -> faces, each with 68 iBUG landmarks.

- `face-alignment` (default): FAN 2D-68 landmarks with its S3FD face detector (the
  `face-alignment` package). Its two weight files download on first use (through `hub.fetch`:
  `$E4E_MIRROR` first, verified, resumable) into the torch hub cache (`$TORCH_HOME/hub/checkpoints`,
  by default `~/.cache/torch/hub/checkpoints`).
- `dlib`: dlib's HOG frontal face detector (upsample 1) plus `shape_predictor_68_face_landmarks.dat`
  from the `face_recognition_models` package -- the predictor FFHQ was aligned with; fully offline
  (`pip install 'e4ecli[dlib]'`).

`open_landmarks("face-alignment")` falls back to dlib, with a one-line note, when the FAN weights
are neither cached nor downloadable; `LandmarkError` says what to install or where to put files
when no backend can run. Backends pickle without their models (a worker process reloads them), so
they can be handed to process pools.

Coordinates: landmarks in pixel-index coordinates of the array given (x right, y down).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

DETECTORS = ("face-alignment", "dlib")
DEFAULT_DETECTOR = "face-alignment"
DETECT_MAX_SIDE = 2048  # larger photos are searched for faces at this size; landmarks use full resolution

FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"
S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
DLIB_PREDICTOR_ENV = "E4E_DLIB_PREDICTOR"
DLIB_PREDICTOR_NAME = "shape_predictor_68_face_landmarks.dat"
DLIB_INSTALL_HINT = "pip install 'e4ecli[dlib]'  (dlib-bin + face_recognition_models)"



@dataclass(frozen=True)
class UsingDlib:
    """The note open_landmarks gives when face-alignment cannot run and dlib stands in: `reason` says why."""

    reason: str

    def __str__(self) -> str:
        return f"face-alignment unavailable: {self.reason}; using dlib instead"


Notify = Callable[["str | UsingDlib"], None]  # str() of either is the line to show


class LandmarkError(RuntimeError):
    """A landmark backend that cannot run; str() says why and what to do."""


class FanUnavailable(LandmarkError):
    """face-alignment cannot run here (not installed, or its weights missing and not downloadable)."""


@dataclass(frozen=True)
class Face:
    """One detected face. landmarks: (68, 2) float64 x, y; box: detector box (x0, y0, x1, y1)."""

    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    score: float | None = None


class LandmarkBackend(Protocol):
    name: str

    def detect(self, image: np.ndarray, source: Path | None = None) -> list[Face]:
        """image: uint8 (H, W, 3) RGB -> faces in detector order. `source`: the file it was decoded
        from (EXIF orientation already applied to `image`), for backends that re-read it."""
        ...


def _detection_scale(shape: Sequence[int]) -> float:
    """Factor (<= 1) by which a photo is shrunk for face search."""
    return min(1.0, DETECT_MAX_SIDE / max(shape[0], shape[1]))


def _shrunk(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


# -- dlib ---------------------------------------------------------------------------------------
def dlib_predictor_path() -> Path | None:
    """The 68-point predictor: $E4E_DLIB_PREDICTOR, else the face_recognition_models package's copy.

    The package is located without importing it (its __init__ imports pkg_resources)."""
    env = os.environ.get(DLIB_PREDICTOR_ENV)
    if env:
        return Path(env).expanduser()
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "models" / DLIB_PREDICTOR_NAME
        if candidate.is_file():
            return candidate
    return None


def dlib_problem() -> str | None:
    """Why the dlib backend cannot run here (None: it can)."""
    if importlib.util.find_spec("dlib") is None:
        return f"dlib is not installed ({DLIB_INSTALL_HINT})"
    path = dlib_predictor_path()
    if path is None:
        return (f"{DLIB_PREDICTOR_NAME} not found: {DLIB_INSTALL_HINT}, or set {DLIB_PREDICTOR_ENV} "
                "to the file's path")
    if not path.is_file():
        return f"{DLIB_PREDICTOR_ENV}={path}: no such file"
    return None


_EXIF_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                   6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def _dlib_decoded(dlib: Any, source: Path | None, expected_shape: tuple[int, ...]) -> np.ndarray | None:
    """A JPEG as dlib itself decodes it (EXIF orientation applied), when that is possible.

    dlib's JPEG decoder differs slightly from PIL's (chroma upsampling) and its landmark regressor
    is sensitive to that; decoding the way the original scripts did (`dlib.load_rgb_image`)
    reproduces their landmarks exactly. Anything unusual -> None (use the PIL pixels)."""
    if source is None or source.suffix.lower() not in (".jpg", ".jpeg"):
        return None
    try:
        from PIL import Image

        with Image.open(source) as im:
            if im.format != "JPEG" or im.mode != "RGB":
                return None
            orientation = im.getexif().get(0x0112, 1)
        arr = np.asarray(dlib.load_rgb_image(str(source)))
        if orientation in _EXIF_TRANSPOSE:
            method = getattr(Image.Transpose, _EXIF_TRANSPOSE[orientation])
            arr = np.asarray(Image.fromarray(arr).transpose(method))
    except Exception:  # noqa: BLE001 -- an optional refinement; PIL's pixels are the fallback
        return None
    return np.ascontiguousarray(arr) if arr.shape == tuple(expected_shape) else None


@functools.lru_cache(maxsize=2)
def _dlib_predictor(path: str) -> Any:
    """The shape predictor (a 100 MB file, ~1.5 s to load), loaded once per process."""
    import dlib

    try:
        return dlib.shape_predictor(path)
    except RuntimeError as e:
        raise LandmarkError(f"cannot load dlib predictor {path}: {e}") from None


class DlibLandmarks:
    """dlib frontal face detector (upsample 1) + 68-point shape predictor."""

    name = "dlib"

    def __init__(self, predictor: Path | None = None):
        if predictor is None:
            problem = dlib_problem()
        elif importlib.util.find_spec("dlib") is None:
            problem = f"dlib is not installed ({DLIB_INSTALL_HINT})"
        else:
            problem = None if Path(predictor).is_file() else f"{predictor}: no such file"
        if problem:
            raise LandmarkError(problem)
        self.predictor_path = Path(predictor or dlib_predictor_path())  # type: ignore[arg-type]
        self._load()

    def _load(self) -> None:
        import dlib

        self._predictor = _dlib_predictor(str(self.predictor_path))
        self._detector = dlib.get_frontal_face_detector()
        self._dlib = dlib

    def __getstate__(self) -> dict:
        return {"predictor_path": self.predictor_path}

    def __setstate__(self, state: dict) -> None:
        self.predictor_path = state["predictor_path"]
        self._load()

    def detect(self, image: np.ndarray, source: Path | None = None) -> list[Face]:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        pixels = _dlib_decoded(self._dlib, source, image.shape)
        if pixels is None:
            pixels = image
        scale = _detection_scale(pixels.shape)
        rects, scores, _ = self._detector.run(_shrunk(pixels, scale), 1, 0)
        faces = []
        for rect, score in zip(rects, scores):
            if scale < 1.0:
                rect = self._dlib.rectangle(int(round(rect.left() / scale)), int(round(rect.top() / scale)),
                                            int(round(rect.right() / scale)), int(round(rect.bottom() / scale)))
            shape = self._predictor(pixels, rect)
            lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(Face(lm, (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom())), float(score)))
        return faces


# -- face-alignment -----------------------------------------------------------------------------
def torch_hub_checkpoints() -> Path:
    """Where torch.hub (and face-alignment) caches weights, computed as torch does, without importing it."""
    if os.environ.get("TORCH_HOME"):
        hub = Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
        hub = Path(cache) / "torch" / "hub"
    return hub / "checkpoints"


def fan_weight_files(urls: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """(url, cache path) of each weight file face-alignment looks for (default: FAN and S3FD)."""
    folder = torch_hub_checkpoints()
    return [(u, folder / u.rsplit("/", 1)[-1]) for u in (urls or (FAN_URL, S3FD_URL))]


def ensure_fan_weights(download: bool = True, notify: Notify | None = None,
                       urls: Sequence[str] | None = None) -> list[Path]:
    """Cache paths of the FAN and S3FD weights, downloading what is missing; FanUnavailable if impossible."""
    from e4ecli.hub.fetch import FetchError, Remote, fetch

    paths = []
    for url, path in fan_weight_files(urls):
        if not path.is_file():
            if not download:
                raise FanUnavailable(f"{path.name} is not in {path.parent}")
            try:
                fetch(Remote(f"face-alignment weights {path.name}", path.name, (url,)), path, progress=notify is not None)
            except FetchError as e:
                reason = e.failures[0].strip() if e.failures else str(e).splitlines()[0]
                raise FanUnavailable(f"cannot download {url} ({reason})") from None
            if notify:
                notify(f"downloaded face-alignment weights {path.name} into {path.parent}")
        paths.append(path)
    return paths


def fan_placement_hint() -> str:
    names = ", ".join(p.name for _, p in fan_weight_files())
    return f"download {names} on a connected machine and place them in {torch_hub_checkpoints()}"


class FanLandmarks:
    """face-alignment's FAN (2D, 68 points) with its S3FD detector; flip_input off, no torch.compile."""

    name = "face-alignment"

    def __init__(self, device: str = "cpu", download: bool = True, notify: Notify | None = None,
                 threads: int | None = None, model: Any = None):
        self.device, self.threads = str(device), threads
        if model is not None:  # an already built face_alignment.FaceAlignment (or stand-in with its API)
            self._fa = model
            return
        if importlib.util.find_spec("face_alignment") is None:
            raise FanUnavailable("the face-alignment package is not installed (pip install face-alignment)")
        self._weights = ensure_fan_weights(download, notify)
        self._fa = self._build()

    def _build(self) -> Any:
        import inspect

        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        import face_alignment
        from face_alignment import api as fa_api

        if fa_api.models_urls.get("2DFAN-4", FAN_URL) != FAN_URL:  # a release that moved its weights
            ensure_fan_weights(True, None, urls=(fa_api.models_urls["2DFAN-4"], S3FD_URL))
        kwargs: dict[str, Any] = {"device": self.device, "flip_input": False, "face_detector": "sfd",
                                  "face_detector_kwargs": {"path_to_detector": str(fan_weight_files((S3FD_URL,))[0][1])}}
        if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
            kwargs["compile"] = False
        try:
            return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)
        except Exception as e:  # noqa: BLE001 -- a corrupt cache file, an incompatible release
            raise FanUnavailable(f"cannot start face-alignment: {type(e).__name__}: {e}") from None

    def __getstate__(self) -> dict:
        return {"device": self.device, "threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.device, self.threads = state["device"], state["threads"]
        self._fa = self._build()

    def detect(self, image: np.ndarray, source: Path | None = None) -> list[Face]:
        image = np.ascontiguousarray(image, dtype=np.uint8)
        scale = _detection_scale(image.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No faces were detected." is a result here, not a warning
            boxes = self._fa.face_detector.detect_from_image(_shrunk(image, scale).copy())
            boxes = [np.asarray(b, dtype=np.float64) for b in (boxes if boxes is not None else [])]
            if not boxes:
                return []
            if scale < 1.0:
                boxes = [np.concatenate([b[:4] / scale, b[4:]]) for b in boxes]
            result = self._fa.get_landmarks_from_image(image, detected_faces=boxes, return_bboxes=True)
        landmarks, _, used = result if isinstance(result, tuple) else (result, None, boxes)
        if landmarks is None:
            return []
        faces = []
        for lm, box in zip(landmarks, used if used is not None else boxes):
            box = np.asarray(box, dtype=np.float64)
            score = float(box[4]) if box.shape[0] > 4 else None
            faces.append(Face(np.asarray(lm, dtype=np.float64)[:, :2], tuple(float(v) for v in box[:4]), score))  # type: ignore[arg-type]
        return faces


# -- choosing a backend -------------------------------------------------------------------------
def open_landmarks(name: str = DEFAULT_DETECTOR, device: str = "cpu", notify: Notify | None = None,
                   threads: int | None = None) -> LandmarkBackend:
    """Start the named backend. face-alignment falls back to dlib (one `notify` line) when it cannot run.

    Raises LandmarkError, with what to install or where to place files, when nothing can run.
    """
    if name == "dlib":
        return DlibLandmarks()
    if name != "face-alignment":
        raise LandmarkError(f"unknown landmark detector {name!r}: choose one of {', '.join(DETECTORS)}")
    try:
        return FanLandmarks(device, notify=notify, threads=threads)
    except FanUnavailable as fan_error:
        problem = dlib_problem()
        if problem is None:
            if notify:
                notify(UsingDlib(str(fan_error)))
            return DlibLandmarks()
        raise LandmarkError(
            f"no landmark detector can run. face-alignment: {fan_error} -- {fan_placement_hint()}. "
            f"dlib: {problem}") from None
