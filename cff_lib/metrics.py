"""Evaluation metrics of ClipFaceFusion (paper "Evaluation metric": "Metrics for photorealism and identity",
"Semantic consistency metrics", "Continuous attribute metrics"; Tables 4, 5, 7, 8).

Images are the project's float ``(B, 3, H, W)`` tensors in [-1, 1]. Every metric below states exactly what it
computes; where the paper is ambiguous the choice is named here and in docs/errata.md.

Photorealism and identity
- :func:`ssim`: torchmetrics ``structural_similarity_index_measure`` per image pair, on images rescaled to
  [0, 1] with ``data_range = 1`` (Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, mean over the SSIM map
  and the three channels). SSIM is invariant to scaling intensities together with the data range (the same
  on [0, 255] with ``data_range = 255``) but NOT to shifting them (the luminance term uses the raw means), so
  SSIM on the raw [-1, 1] tensors with ``data_range = 2`` would differ; [0, 1] is the standard convention.
- :class:`Lpips`, two backends. ``"paper"``: the ``lpips`` package's ``LPIPS(net="alex" | "vgg")`` (v0.1,
  learned linear heads shipped inside the package), its ImageNet backbone read from a *local* torchvision
  file (never downloaded). ``"synthetic"``: "LPIPS-VGG(synthetic)", the LPIPS formula with uniform weights on
  this project's :class:`~cff_lib.vgg_perceptual.PerceptualVGG` maps (relu3_3, relu4_3):
  ``d(a, b) = sum_l mean_{h,w} sum_c (f^l_a / ||f^l_a||_c - f^l_b / ||f^l_b||_c)^2`` (each spatial feature
  vector unit-normalised over channels, eps 1e-10 as in lpips). It is *not* the paper's LPIPS value scale.
- :func:`frechet_distance` / :class:`Fid`: the Fréchet distance between Gaussians fitted to two feature sets,
  ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``. ``Fid("paper")`` = torchmetrics'
  ``FrechetInceptionDistance`` (2048-d pool features of torch-fidelity's InceptionV3, weights from a local
  file); ``Fid("synthetic", extractor=..., extractor_name=...)`` = the same distance on a named substitute
  feature extractor, and the name is part of the result.
- :func:`identity_similarity`: ArcFace cosine per (generated, reference) pair, higher = better. This is what the
  paper's "FID" column of Tables 5, 7, 8 measures ("FID via ArcFace", "Face Identity Similarity (FID)"); see
  docs/errata.md. It is reported under this name, never as "fid".

Semantic consistency (Table 4) and S_dir (Tables 5, 7)
- :func:`text_image_cosine`: ``cos(f_I, f_T)`` of the CLIP image embedding and its prompt's text embedding.
- :func:`clip_score`: ``w * max(cos(f_I, f_T), 0)``. torchmetrics' ``CLIPScore`` is this with ``w = 100`` and
  ViT-L/14; Hessel et al.'s CLIP-S uses ``w = 2.5``. The paper's CLIPScore values (0.241..0.315) are on the
  scale of a raw ViT-B/32 cosine, so this companion uses the passed :class:`~cff_lib.clip_encoder.ClipEncoder`
  (open_clip ViT-B/32 or the synthetic CLIP) and ``w = 1`` by default: clip_score is then the clipped cosine.
  The paper's CLIPScore (0.315) exceeds its own cosine (0.283) for the same images; with w = 1 clip_score can
  never exceed the cosine (it would take w = 1.11, which no published CLIPScore uses), so that gap is not
  reproducible by construction (the claims ledger records it).
- :func:`directional_clip_similarity`: ``S_dir = cos(f_I,gen - f_I,ref, f_T,target - f_T,src)`` per pair,
  on L2-normalised CLIP embeddings (as DiffusionCLIP). A zero direction gives 0 (cosine eps 1e-8).

Attributes ("Continuous attribute metrics")
- :func:`age_metrics`: accuracy = fraction with ``|pred - target| <= tolerance`` (the paper gives no
  tolerance; 5 years is the age-estimation literature's "cumulative score" CS(5)), MAE and RMSE in years.
- :func:`emotion_accuracy`: top-1 accuracy over ``cff_lib.emotions.EMOTIONS``.
- :func:`valence_arousal_metrics`: Pearson r of predicted vs target valence, and of arousal; AVD = mean over
  samples of ``||[v_g, a_g] - [v_t, a_t]||_2``.
- :func:`emotion_emd`: the Earth Mover's distance between two distributions over the 8 emotion categories,
  ground distance = Euclidean distance between the categories' valence/arousal prototypes
  (``cff_lib.emotions.VALENCE_AROUSAL``), solved exactly as the transport linear programme
  ``min sum_ij D_ij x_ij  s.t.  sum_j x_ij = p_i, sum_i x_ij = q_j, x >= 0`` (scipy ``linprog``, HiGHS).

Realism and artefacts (not in the paper; docs/errata.md)
- :func:`kernel_inception_distance`: KID, the unbiased polynomial-kernel MMD² over subsets, in any feature
  space (the evaluation uses the referees' pooled features, :meth:`cff_lib.referees.Referees.features`).
- :func:`band_power` / :func:`artefact_ratio`: spectral power in 0.125-0.25 cycles/pixel relative to the
  sources: colour blotches and noise raise it.

Cross-modal consistency (Tables 5-8)
- :func:`cross_modal_consistency`: CMC = per sample, the mean cosine over unordered pairs of the present
  fused-modality embeddings (paper: "cosine similarity among the integrated embeddings of text, audio, age,
  and emotion inputs"), then the mean over samples.

Seeds: every statistic is "mean ± standard deviation over five trials" -- :func:`mean_std` (sample std,
ddof = 1) and :class:`SeedResults`.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cff_lib.emotions import EMOTIONS, VALENCE_AROUSAL
from cff_lib.encoder_base import check_images, missing_weights

LPIPS_BACKENDS = ("paper", "synthetic")
FID_BACKENDS = ("paper", "synthetic")
LPIPS_SYNTHETIC_NAME = "LPIPS-VGG(synthetic)"
DEFAULT_AGE_TOLERANCE = 5.0  # years; CS(5). The paper states no tolerance for "Age Accuracy"
DEFAULT_CLIP_SCORE_WEIGHT = 1.0  # w in w * max(cos, 0); see the module docstring
PAPER_EVAL_SEEDS = (42, 43, 44, 45, 46)  # presets/paper.yaml eval.seeds: 42 and four more, fixed
TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
LPIPS_HOW_TO_GET = (
    "Download torchvision's ImageNet {net} weights https://download.pytorch.org/models/{file} on a machine "
    "with internet and pass its path as `backbone_checkpoint` (or place it in {hub}/checkpoints/)."
)
FID_HOW_TO_GET = (
    "Download torch-fidelity's InceptionV3 weights https://github.com/toshas/torch-fidelity/releases/download/"
    f"v0.2.0/{INCEPTION_FILE} on a machine with internet and pass its path as `weights_path` "
    "(or place it in {hub}/checkpoints/)."
)


# ------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class MetricResult:
    """One metric over a set of items (images, pairs or samples)."""

    name: str  # unambiguous result key, e.g. "ssim", "LPIPS-VGG(synthetic)", "identity_similarity"
    per_item: tuple[float, ...]  # one value per item, in input order
    mean: float  # mean of per_item
    higher_is_better: bool  # direction of the metric as defined here (not as a paper header prints it)
    note: str = ""  # what exactly was computed (backend, data range, weight ...)

    @property
    def n(self) -> int:
        return len(self.per_item)


def _result(name: str, values: torch.Tensor | np.ndarray, higher: bool, note: str = "") -> MetricResult:
    arr = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    arr = arr.reshape(-1)
    return MetricResult(name=name, per_item=tuple(float(v) for v in arr), mean=float(arr.mean()),
                        higher_is_better=higher, note=note)


# --------------------------------------------------------------------------------------------- validation
def _check_pair(a: Any, b: Any, names: tuple[str, str] = ("a", "b")) -> tuple[torch.Tensor, torch.Tensor]:
    """Both image batches valid, with the same count and size."""
    check_images(a, argument=names[0])
    check_images(b, argument=names[1])
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} must hold the same number of images to pair them, got "
                         f"{a.shape[0]} and {b.shape[0]}")
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"{names[1]} must have the same size as {names[0]}, got {tuple(b.shape[-2:])} vs "
                         f"{tuple(a.shape[-2:])}")
    return a, b


def _check_texts(texts: Any, n: int, argument: str) -> list[str]:
    """A list of ``n`` strings; a single string is repeated ``n`` times."""
    if isinstance(texts, str):
        return [texts] * n
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{argument} must be a string or a list of strings, got {type(texts).__name__}")
    if len(texts) != n:
        raise ValueError(f"{argument} must hold one prompt per image ({n}), got {len(texts)}")
    return list(texts)


def _as_float_array(x: Any, argument: str, ndim: int, width: int | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be numeric, got {type(x).__name__}") from None
    if arr.ndim != ndim or (width is not None and arr.shape[-1] != width):
        want = "(N,)" if ndim == 1 else f"(N, {width})"
        raise ValueError(f"{argument} must have shape {want}, got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{argument} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{argument} contains NaN or inf")
    return arr


def _same_length(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {a.shape[0]} and "
                         f"{b.shape[0]}")


def _require_eval(model: Any, argument: str) -> None:
    """Metrics read frozen networks: a torch module still in training mode (BatchNorm batch statistics,
    dropout) would give batch-dependent values, so it is refused."""
    if isinstance(model, torch.nn.Module) and model.training:
        raise ValueError(f"{argument} is in training mode; call {argument}.eval() before computing a metric")


def _batches(n: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


# ------------------------------------------------------------------------------------------------------ SSIM
def ssim(a: torch.Tensor, b: torch.Tensor) -> MetricResult:
    """Per-pair SSIM of ``a[i]`` vs ``b[i]`` (torchmetrics, images rescaled to [0, 1], data_range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(a, b)
    if a.shape[-1] < 11:
        raise ValueError(f"a must be at least 11x11 for SSIM's 11x11 Gaussian window, got {a.shape[-1]}")
    x = ((a.detach().float() + 1) / 2).clamp(0, 1)
    y = ((b.detach().float() + 1) / 2).clamp(0, 1)
    values = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")  # (B,)
    return _result("ssim", values, True, "torchmetrics SSIM, [0,1] images, data_range=1, gaussian 11/1.5")


# ----------------------------------------------------------------------------------------------------- LPIPS
def _lpips_distance(fa: Mapping[str, torch.Tensor], fb: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The LPIPS formula with uniform weights: sum_l mean_hw sum_c (unit(fa) - unit(fb))^2 -> (B,)."""
    total = 0.0
    for name in fa:
        xa, xb = fa[name].double(), fb[name].double()
        xa = xa / (xa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        xb = xb / (xb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        total = total + (xa - xb).pow(2).sum(dim=1).mean(dim=(1, 2))
    return total


def _torchvision_weights(path: str | os.PathLike | None, net: str) -> Path:
    file = TORCHVISION_FILES[net]
    hub = torch.hub.get_dir()
    if path is None:
        path = Path(hub) / "checkpoints" / file
    if not Path(path).is_file():
        raise missing_weights(f"LPIPS {net} backbone (torchvision {file})", path,
                              LPIPS_HOW_TO_GET.format(net=net, file=file, hub=hub))
    return Path(path)


class Lpips:
    """LPIPS distance per image pair (lower = more similar).

    ``Lpips("paper", net="alex" | "vgg", backbone_checkpoint=path)``: the ``lpips`` package's LPIPS v0.1 with
    its learned linear heads; the torchvision ImageNet backbone file is read from ``backbone_checkpoint`` or
    torch's hub cache and never downloaded (FileNotFoundError naming the file otherwise).

    ``Lpips("synthetic", vgg=PerceptualVGG)``: "LPIPS-VGG(synthetic)" -- the LPIPS formula with uniform layer
    and channel weights on the given PerceptualVGG's relu3_3 and relu4_3 maps (see the module docstring).
    """

    def __init__(self, backend: str, *, net: str = "alex",
                 backbone_checkpoint: str | os.PathLike | None = None, vgg: Any = None):
        if backend not in LPIPS_BACKENDS:
            raise ValueError(f"backend={backend!r} must be one of {LPIPS_BACKENDS}")
        self.backend = backend  # "paper" | "synthetic"
        if backend == "synthetic":
            if vgg is None or not callable(vgg):
                raise ValueError("vgg must be a PerceptualVGG (cff_lib.vgg_perceptual.create_vgg) for the "
                                 "synthetic LPIPS backend")
            _require_eval(vgg, "vgg")
            self.model = vgg
            self.name = LPIPS_SYNTHETIC_NAME
            return
        if net not in TORCHVISION_FILES:
            raise ValueError(f"net={net!r} must be one of {tuple(TORCHVISION_FILES)}")
        path = _torchvision_weights(backbone_checkpoint, net)
        import lpips
        import torchvision

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # random trunk: nothing downloaded
        with torch.device("meta"):  # shapes only; the real tensors come from the file
            trunk = (torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16)(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        try:  # only the convolutional trunk is used; a classifier in the file is ignored
            trunk.features.load_state_dict(features, strict=True, assign=True)
        except RuntimeError as e:
            raise ValueError(f"backbone_checkpoint {path} is not torchvision's {net} state dict: "
                             f"{str(e)[:300]}") from e
        for part in model.net.children():  # lpips slices hold features[i] under the name str(i)
            for idx, module in part.named_children():
                module.load_state_dict(trunk.features[int(idx)].state_dict())
        self.model = model.eval()
        self.name = f"LPIPS-{net}"

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor, batch_size: int = 32) -> MetricResult:
        _check_pair(a, b)
        out = []
        for s in _batches(a.shape[0], batch_size):
            if self.backend == "paper":
                out.append(self.model(a[s].float(), b[s].float(), normalize=False).reshape(-1).double())
            else:
                out.append(_lpips_distance(self.model(a[s]), self.model(b[s])))
        note = ("lpips package v0.1, linear heads" if self.backend == "paper"
                else "uniform-weight LPIPS formula on PerceptualVGG relu3_3 + relu4_3")
        return _result(self.name, torch.cat(out), False, note)


# ------------------------------------------------------------------------------------------------------- FID
def frechet_distance(feats_a: Any, feats_b: Any, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to ``feats_a`` (N, D) and ``feats_b`` (M, D).

    Numerics: float64 throughout; means and unbiased covariances (ddof = 1, as torchmetrics and pytorch-fid);
    ``(S_a S_b)^{1/2}`` by ``scipy.linalg.sqrtm``. If that is not finite (singular product), both covariances
    get ``eps * I`` added and it is recomputed. Imaginary parts from round-off are dropped when the
    diagonal's are below 1e-3 (pytorch-fid's rule); larger ones raise ValueError. With N <= D the covariance
    is rank-deficient and the value is a biased, high-variance estimate (it is still computed).
    """
    from scipy import linalg

    a = _as_float_array(feats_a, "feats_a", 2)
    b = _as_float_array(feats_b, "feats_b", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feats_b must have the same feature size as feats_a, got {b.shape[1]} vs "
                         f"{a.shape[1]}")
    for arr, name in ((a, "feats_a"), (b, "feats_b")):
        if arr.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 samples for a covariance, got {arr.shape[0]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(s_a.shape[0]) * eps
            covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm(S_a S_b) has imaginary diagonal up to "
                             f"{np.abs(np.diagonal(covmean).imag).max():.3g}; the feature covariances are "
                             "numerically unusable (too few samples?)")
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def kernel_inception_distance(feats_a: Any, feats_b: Any, subset_size: int = 100, n_subsets: int = 50,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel
    ``k(x, y) = (x·y / D + 1)^3``, averaged over ``n_subsets`` random subsets of ``subset_size`` from each set
    (drawn by ``default_rng(seed)``, without replacement). Returns (mean, std over subsets); ≈ 0 for two
    samples of one distribution (it can be slightly negative), > 0 when they differ. Any feature extractor:
    the name of the space belongs in the result's label (here: the referees' pooled features)."""
    a = _as_float_array(feats_a, "feats_a", 2)
    b = _as_float_array(feats_b, "feats_b", 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feats_b must have the same feature size as feats_a, got {b.shape[1]} vs {a.shape[1]}")
    if not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"subset_size={subset_size!r} must be an integer >= 2")
    if not isinstance(n_subsets, int) or n_subsets < 1:
        raise ValueError(f"n_subsets={n_subsets!r} must be a positive integer")
    for arr, name in ((a, "feats_a"), (b, "feats_b")):
        if arr.shape[0] < subset_size:
            raise ValueError(f"{name} has {arr.shape[0]} samples, fewer than subset_size={subset_size}; "
                             "pass a smaller subset_size or more samples")
    rng = np.random.default_rng(int(seed))
    d, m = a.shape[1], subset_size
    vals = []
    for _ in range(n_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if n_subsets > 1 else float("nan")


ARTEFACT_BAND = (0.125, 0.25)  # cycles/pixel: periods of 4-8 px, where the shipped toy edits' blotches live


def band_power(images: torch.Tensor, band: tuple[float, float] = ARTEFACT_BAND) -> np.ndarray:
    """Per image, the power of the luminance spectrum (mean removed) whose radial frequency lies in ``band``
    (cycles/pixel), divided by the number of pixels; (B,). An artefact measure: colour blotches and
    high-frequency noise raise it, a smooth face keeps it low. Compare methods by
    ``band_power(edits) / band_power(sources)`` (:func:`artefact_ratio`)."""
    check_images(images, argument="images")
    lo, hi = band
    if not 0.0 <= lo < hi <= 0.5 * math.sqrt(2) + 1e-9:
        raise ValueError(f"band={band} must satisfy 0 <= low < high <= 0.707 cycles/pixel")
    x = images.double()
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # (B, H, W)
    luma = luma - luma.mean(dim=(1, 2), keepdim=True)
    h, w = luma.shape[-2:]
    power = torch.fft.fft2(luma).abs() ** 2 / (h * w)  # (B, H, W)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    radius = (fy[:, None] ** 2 + fx[None] ** 2).sqrt()  # (H, W) cycles/pixel
    mask = (radius >= lo) & (radius < hi)
    return (power * mask).sum(dim=(1, 2)).div(h * w).numpy()


def artefact_ratio(generated: torch.Tensor, source: torch.Tensor, band: tuple[float, float] = ARTEFACT_BAND
                   ) -> float:
    """Mean :func:`band_power` of ``generated`` over that of ``source`` (1 = as much fine structure as the
    sources; > 1 = added texture / blotches; < 1 = smoothed)."""
    _check_pair(generated, source, ("generated", "source"))
    return float(band_power(generated, band).mean() / max(band_power(source, band).mean(), 1e-12))


@dataclass(frozen=True)
class FidResult:
    """A Fréchet distance between a real and a generated image set."""

    name: str  # result key naming the feature extractor, e.g. "FID[InceptionV3-2048]"
    value: float  # the Fréchet distance (lower = closer distributions)
    extractor: str  # the feature extractor's name
    n_real: int  # images in the real set
    n_fake: int  # images in the generated set
    feature_dim: int  # D of the features the Gaussians are fitted to


def _inception_weights(path: str | os.PathLike | None) -> Path:
    hub = torch.hub.get_dir()
    if path is None:
        path = Path(hub) / "checkpoints" / INCEPTION_FILE
    if not Path(path).is_file():
        raise missing_weights(f"FID InceptionV3 ({INCEPTION_FILE})", path, FID_HOW_TO_GET.format(hub=hub))
    return Path(path)


class Fid:
    """Fréchet distance of two image sets in a feature space.

    ``Fid("paper", weights_path=...)``: torchmetrics ``FrechetInceptionDistance(feature=2048,
    normalize=True)`` on ``(x + 1) / 2``, InceptionV3 weights from a local file (FileNotFoundError otherwise).
    ``Fid("synthetic", extractor=f, extractor_name="...")``: :func:`frechet_distance` of ``f(images)``
    (B, D) features, e.g. the synthetic CLIP image encoder; the name is part of the result key.
    """

    def __init__(self, backend: str, *, weights_path: str | os.PathLike | None = None,
                 extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 extractor_name: str | None = None):
        if backend not in FID_BACKENDS:
            raise ValueError(f"backend={backend!r} must be one of {FID_BACKENDS}")
        self.backend = backend  # "paper" | "synthetic"
        if backend == "synthetic":
            if extractor is None or not callable(extractor):
                raise ValueError("extractor must be a callable images -> (B, D) features for the synthetic "
                                 "FID backend")
            if not extractor_name or not isinstance(extractor_name, str):
                raise ValueError("extractor_name must name the substitute feature extractor (it appears in "
                                 "the result)")
            _require_eval(extractor, "extractor")
            self.extractor, self.extractor_name = extractor, extractor_name
            self.metric = None
        else:
            path = _inception_weights(weights_path)
            from torchmetrics.image.fid import FrechetInceptionDistance

            self.metric = FrechetInceptionDistance(feature=2048, normalize=True,
                                                   feature_extractor_weights_path=str(path))
            self.extractor, self.extractor_name = None, "InceptionV3-2048"
        self.name = f"FID[{self.extractor_name}]"  # result key

    @torch.no_grad()
    def __call__(self, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 64) -> FidResult:
        check_images(real, argument="real")
        check_images(fake, argument="fake")
        for x, name in ((real, "real"), (fake, "fake")):
            if x.shape[0] < 2:
                raise ValueError(f"{name} needs at least 2 images for a covariance, got {x.shape[0]}")
        if self.backend == "paper":
            self.metric.reset()
            for x, is_real in ((real, True), (fake, False)):
                for s in _batches(x.shape[0], batch_size):
                    self.metric.update(((x[s].float() + 1) / 2).clamp(0, 1), real=is_real)
            value, dim = float(self.metric.compute()), 2048
        else:
            fr = torch.cat([self.extractor(real[s]).detach().double().cpu()
                            for s in _batches(real.shape[0], batch_size)])
            ff = torch.cat([self.extractor(fake[s]).detach().double().cpu()
                            for s in _batches(fake.shape[0], batch_size)])
            value, dim = frechet_distance(fr.numpy(), ff.numpy()), int(fr.shape[1])
        return FidResult(name=self.name, value=value, extractor=self.extractor_name, n_real=real.shape[0],
                         n_fake=fake.shape[0], feature_dim=dim)


# -------------------------------------------------------------------------------------------------- identity
@torch.no_grad()
def identity_similarity(arcface: Callable[[torch.Tensor], torch.Tensor], generated: torch.Tensor,
                        reference: torch.Tensor, batch_size: int = 64) -> MetricResult:
    """ArcFace cosine ``cos(ArcFace(generated[i]), ArcFace(reference[i]))`` per pair (higher = same identity).

    The paper's "FID" column (Tables 5, 7, 8: "FID via ArcFace", "Face Identity Similarity") -- docs/errata.md.
    """
    _check_pair(generated, reference, ("generated", "reference"))
    _require_eval(arcface, "arcface")
    out = []
    for s in _batches(generated.shape[0], batch_size):
        eg, er = arcface(generated[s]).double(), arcface(reference[s]).double()
        out.append(F.cosine_similarity(eg, er, dim=-1, eps=1e-8))
    return _result("identity_similarity", torch.cat(out), True, "ArcFace cosine per pair")


# ------------------------------------------------------------------------------------------------------ CLIP
@torch.no_grad()
def _encode_images(clip: Any, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    _require_eval(clip, "clip")
    return torch.cat([F.normalize(clip.encode_image(images[s]).double(), dim=-1)
                      for s in _batches(images.shape[0], batch_size)])


@torch.no_grad()
def _encode_texts(clip: Any, texts: list[str]) -> torch.Tensor:
    unique = sorted(set(texts))
    emb = F.normalize(clip.encode_text(unique).double(), dim=-1)
    index = {t: i for i, t in enumerate(unique)}
    return emb[[index[t] for t in texts]]


def text_image_cosine(clip: Any, images: torch.Tensor, texts: str | Sequence[str],
                      batch_size: int = 64) -> MetricResult:
    """Raw CLIP cosine ``cos(f_I(images[i]), f_T(texts[i]))`` (Table 4 "Text-Image Cosine Similarity")."""
    check_images(images, argument="images")
    texts = _check_texts(texts, images.shape[0], "texts")
    cos = (_encode_images(clip, images, batch_size) * _encode_texts(clip, texts)).sum(dim=-1)
    return _result("text_image_cosine", cos, True, "raw CLIP image-text cosine")


def clip_score(clip: Any, images: torch.Tensor, texts: str | Sequence[str],
               weight: float = DEFAULT_CLIP_SCORE_WEIGHT, batch_size: int = 64) -> MetricResult:
    """CLIPScore = ``weight * max(cos(f_I, f_T), 0)`` per image (Table 4); ``weight`` = 1 by default."""
    if not (isinstance(weight, (int, float)) and weight > 0 and math.isfinite(weight)):
        raise ValueError(f"weight={weight!r} must be a positive finite number")
    cos = np.asarray(text_image_cosine(clip, images, texts, batch_size).per_item)
    return _result("clip_score", weight * np.maximum(cos, 0.0), True,
                   f"{weight:g} * max(cos, 0) with the passed CLIP encoder")


def directional_clip_similarity(clip: Any, generated: torch.Tensor, reference: torch.Tensor,
                                target_text: str | Sequence[str], source_text: str | Sequence[str],
                                batch_size: int = 64) -> MetricResult:
    """``S_dir = cos(f_I,gen - f_I,ref, f_T,target - f_T,src)`` per pair (higher = edit follows the text)."""
    _check_pair(generated, reference, ("generated", "reference"))
    n = generated.shape[0]
    target = _check_texts(target_text, n, "target_text")
    source = _check_texts(source_text, n, "source_text")
    d_img = _encode_images(clip, generated, batch_size) - _encode_images(clip, reference, batch_size)
    d_txt = _encode_texts(clip, target) - _encode_texts(clip, source)
    return _result("s_dir", F.cosine_similarity(d_img, d_txt, dim=-1, eps=1e-8), True,
                   "cos of CLIP image and text directions")


# ------------------------------------------------------------------------------------------------------- age
@dataclass(frozen=True)
class AgeMetrics:
    """Age accuracy and errors of estimated vs target ages."""

    n: int  # samples
    tolerance: float  # years; a prediction is correct when |pred - target| <= tolerance
    accuracy: float  # fraction of correct predictions, in [0, 1]
    mae: float  # mean absolute error, years
    rmse: float  # root mean squared error, years

    @property
    def accuracy_percent(self) -> float:
        return 100.0 * self.accuracy


def age_metrics(pred_ages: Any, target_ages: Any, tolerance: float = DEFAULT_AGE_TOLERANCE) -> AgeMetrics:
    """Age accuracy within ±``tolerance`` years (inclusive), MAE and RMSE."""
    p = _as_float_array(pred_ages, "pred_ages", 1)
    t = _as_float_array(target_ages, "target_ages", 1)
    _same_length(p, t, ("pred_ages", "target_ages"))
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance={tolerance!r} must be a non-negative number of years")
    err = p - t
    return AgeMetrics(n=len(p), tolerance=float(tolerance),
                      accuracy=float((np.abs(err) <= tolerance + 1e-9).mean()),
                      mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err ** 2).mean())))


# --------------------------------------------------------------------------------------------------- emotion
def _labels(x: Any, argument: str) -> np.ndarray:
    """Class indices (N,) from indices, emotion names, or (N, 8) logits / probabilities (argmax)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, str) for v in x):
        idx = []
        for v in x:
            if v not in EMOTIONS:
                raise ValueError(f"{argument} contains {v!r}, not one of {EMOTIONS}")
            idx.append(EMOTIONS.index(v))
        return np.asarray(idx)
    arr = np.asarray(x)
    if arr.size == 0:
        raise ValueError(f"{argument} is empty")
    if arr.ndim == 2:
        if arr.shape[1] != len(EMOTIONS):
            raise ValueError(f"{argument} as logits must have shape (N, {len(EMOTIONS)}), got {arr.shape}")
        if not np.isfinite(arr.astype(np.float64)).all():
            raise ValueError(f"{argument} contains NaN or inf")
        return arr.argmax(axis=1)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{argument} must be class indices (N,), emotion names, or logits (N, "
                         f"{len(EMOTIONS)}), got {arr.dtype} {arr.shape}")
    if arr.min() < 0 or arr.max() >= len(EMOTIONS):
        raise ValueError(f"{argument} holds class indices outside 0..{len(EMOTIONS) - 1}")
    return arr


def emotion_accuracy(pred: Any, target: Any) -> MetricResult:
    """Top-1 emotion accuracy: ``pred`` = logits (N, 8) / indices / names; ``target`` = indices / names."""
    p, t = _labels(pred, "pred"), _labels(target, "target")
    if t.ndim != 1:
        raise ValueError("target must be class indices or names, not logits")
    _same_length(p, t, ("pred", "target"))
    return _result("emotion_accuracy", (p == t).astype(np.float64), True, "top-1 over EMOTIONS")


def emotion_histogram(labels: Any) -> np.ndarray:
    """Distribution (8,) over EMOTIONS of class indices / names / argmax of logits; sums to 1."""
    idx = _labels(labels, "labels")
    return np.bincount(idx, minlength=len(EMOTIONS)).astype(np.float64) / len(idx)


@dataclass(frozen=True)
class ValenceArousalMetrics:
    """Agreement of generated (v_g, a_g) with target (v_t, a_t)."""

    n: int  # samples
    pearson_valence: float  # Pearson r of v_g vs v_t (NaN when either is constant)
    pearson_arousal: float  # Pearson r of a_g vs a_t (NaN when either is constant)
    avd: float  # mean over samples of ||[v_g, a_g] - [v_t, a_t]||_2
    avd_per_item: tuple[float, ...]  # the per-sample distances


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(xc @ yc) / denom if denom > 0 else float("nan")


def valence_arousal_metrics(pred_va: Any, target_va: Any) -> ValenceArousalMetrics:
    """Pearson r for valence and for arousal, and AVD (paper "Continuous attribute metrics")."""
    p = _as_float_array(pred_va, "pred_va", 2, 2)
    t = _as_float_array(target_va, "target_va", 2, 2)
    _same_length(p, t, ("pred_va", "target_va"))
    if len(p) < 2:
        raise ValueError(f"pred_va needs at least 2 samples for a Pearson correlation, got {len(p)}")
    d = np.linalg.norm(p - t, axis=1)
    return ValenceArousalMetrics(n=len(p), pearson_valence=_pearson(p[:, 0], t[:, 0]),
                                 pearson_arousal=_pearson(p[:, 1], t[:, 1]), avd=float(d.mean()),
                                 avd_per_item=tuple(float(v) for v in d))


def emotion_ground_distance() -> np.ndarray:
    """(8, 8) Euclidean distances between the categories' valence/arousal prototypes (EMOTIONS order)."""
    va = np.array([VALENCE_AROUSAL[e] for e in EMOTIONS], dtype=np.float64)
    return np.linalg.norm(va[:, None, :] - va[None, :, :], axis=-1)


def _histogram(x: Any, argument: str) -> np.ndarray:
    h = _as_float_array(x, argument, 1)
    if h.shape[0] != len(EMOTIONS):
        raise ValueError(f"{argument} must have {len(EMOTIONS)} bins (EMOTIONS order), got {h.shape[0]}")
    if (h < 0).any() or h.sum() <= 0:
        raise ValueError(f"{argument} must be non-negative with a positive sum")
    return h / h.sum()


def emotion_emd(p_hist: Any, q_hist: Any) -> float:
    """Earth Mover's distance between emotion distributions ``p_hist`` and ``q_hist`` (8,), in VA units.

    Each histogram is normalised to sum 1 first. Exact: the transport LP solved by ``scipy.optimize.linprog``
    (HiGHS) over the 64 flows ``x_ij >= 0`` with row sums p and column sums q, cost = prototype distances.
    """
    from scipy.optimize import linprog

    p, q = _histogram(p_hist, "p_hist"), _histogram(q_hist, "q_hist")
    k = len(EMOTIONS)
    cost = emotion_ground_distance().reshape(-1)
    a_eq = np.zeros((2 * k, k * k))
    for i in range(k):
        a_eq[i, i * k:(i + 1) * k] = 1.0  # sum_j x_ij = p_i
        a_eq[k + i, i::k] = 1.0  # sum_i x_ij = q_j
    res = linprog(cost, A_eq=a_eq, b_eq=np.concatenate([p, q]), bounds=(0, None), method="highs")
    if res.status != 0:  # cannot happen for valid histograms; kept as a guard
        raise RuntimeError(f"emotion EMD transport LP failed: {res.message}")
    return max(float(res.fun), 0.0)


# ------------------------------------------------------------------------------------------------------- CMC
def cross_modal_consistency(normalized: Mapping[str, torch.Tensor | None]) -> MetricResult:
    """CMC: per sample, mean cosine over unordered pairs of the present modality embeddings; then the mean.

    ``normalized``: modality name -> (B, D) fused-space embedding (e.g. ``{"text": f'_T, "audio": f'_A,
    "age": f'_Age, "emotion": f'_Emo}``); a missing key or ``None`` is an absent modality. Needs >= 2 present.
    Embeddings are L2-normalised here again, so un-normalised inputs give the same value.
    """
    if not isinstance(normalized, Mapping):
        raise ValueError(f"normalized must be a dict of modality -> (B, D) tensor, got "
                         f"{type(normalized).__name__}")
    present = {k: v for k, v in normalized.items() if v is not None}
    if len(present) < 2:
        raise ValueError(f"normalized needs at least 2 present modalities for a pairwise cosine, got "
                         f"{sorted(present)}")
    shape = None
    for k, v in present.items():
        if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[0] == 0:
            raise ValueError(f"normalized[{k!r}] must be a (B, D) tensor with B >= 1")
        if not torch.isfinite(v).all():
            raise ValueError(f"normalized[{k!r}] contains NaN or inf")
        if shape is not None and tuple(v.shape) != shape:
            raise ValueError(f"normalized[{k!r}] has shape {tuple(v.shape)}, others {shape}")
        shape = tuple(v.shape)
    names = sorted(present)
    emb = {k: F.normalize(present[k].detach().double(), dim=-1) for k in names}
    cos = [(emb[m] * emb[n]).sum(-1) for i, m in enumerate(names) for n in names[i + 1:]]
    return _result("cmc", torch.stack(cos).mean(dim=0), True,
                   f"mean pairwise cosine over {', '.join(names)}")


# ----------------------------------------------------------------------------------------------------- seeds
def mean_std(values_per_seed: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof = 1) over seeds; std is NaN for a single seed."""
    v = _as_float_array(values_per_seed, "values_per_seed", 1)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else float("nan"))


@dataclass(frozen=True)
class SeedResults:
    """Per-seed values of several metrics; reported as mean ± std over the seeds (paper: five trials)."""

    seeds: tuple[int, ...]  # the evaluation seeds, e.g. PAPER_EVAL_SEEDS
    values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # metric -> one value per seed

    def __post_init__(self):
        if len(self.seeds) == 0 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be non-empty and distinct, got {self.seeds}")
        for k, v in self.values.items():
            if len(v) != len(self.seeds):
                raise ValueError(f"values[{k!r}] has {len(v)} entries for {len(self.seeds)} seeds")

    def with_metric(self, name: str, per_seed: Sequence[float]) -> SeedResults:
        return SeedResults(self.seeds, {**self.values, name: tuple(float(x) for x in per_seed)})

    def summary(self, name: str) -> tuple[float, float]:
        if name not in self.values:
            raise ValueError(f"name={name!r} is not a recorded metric; have {sorted(self.values)}")
        return mean_std(self.values[name])

    def format(self, name: str, digits: int = 3) -> str:
        m, s = self.summary(name)
        return (f"{m:.{digits}f} ± {s:.{digits}f}" if math.isfinite(s)
                else f"{m:.{digits}f} (1 seed, no std)")

    def table(self):
        """pandas DataFrame: metric, mean, std, n_seeds, seeds."""
        import pandas as pd

        rows = [{"metric": k, "mean": self.summary(k)[0], "std": self.summary(k)[1],
                 "n_seeds": len(self.seeds), "seeds": " ".join(map(str, self.seeds))} for k in self.values]
        return pd.DataFrame(rows, columns=["metric", "mean", "std", "n_seeds", "seeds"])
