"""Running and scoring ClipFaceFusion against the text-only DiffusionCLIP-style baseline and the plain
reconstruction (paper "Quantitative results", Figs. 6-7, Tables 4-6): the methods, the held-out pool and its
seeds, the metrics per seed, the inversion fidelity, the Fig. 6 sweep and Table 6's pairs. The Fig. 4
scenarios and the qualitative series are :mod:`cff_lib.qualitative`; the claims ledger filled from an
:class:`Evaluation` is :mod:`cff_lib.claims_evaluation`.

Methods (:data:`METHODS`), on the same inputs with the same DDIM settings (the profile's ``ddim`` section).
Each method inverts (unconditionally, Eq. 9) and samples with *its own* UNet, the chain it was trained with
(:func:`method_unets`); under ``model.trainable: fusion`` all three UNets are the pretrained DDPM:

- ``ClipFaceFusion``: reverse chain conditioned on c of the trained model (all given modalities, I_ref = face),
  on the model's UNet (fine-tuned under ``fusion+unet``);
- ``DiffusionCLIP-style (text only)``: reverse chain conditioned on the CLIP text feature of the caption only
  (``cff_lib.baselines.TextOnlyBaseline``, its own UNet);
- ``Reconstruction (inversion → reverse, no condition)``: c = None on the pretrained DDPM as loaded
  (``ClipFaceFusion.pretrained_unet``): what the backbone gives back before anyone edits.

Evaluation units. The held-out pool is the composite ``val`` split's rows with a face, a target age and a
target emotion (``control.control_rows``; faces of held-out identities). DDIM is deterministic (η = 0), so a
*seed* draws which ``n_samples`` rows of the pool are edited (``numpy.random.default_rng(seed)`` without
replacement; the whole pool when it is smaller). Each metric is computed per seed over its samples and
reported as mean ± std over the profile's ``eval.seeds`` (``metrics.SeedResults``). Table 6 pairs the two
systems per seed (same rows, same seed); per-sample values are kept too (:class:`Evaluation.per_sample`).

Judges. Every attribute, identity and text-image reading below comes from the **referees**
(:mod:`cff_lib.referees`: independent networks no loss or selection step ever saw). The **guides** (the frozen
estimators inside the losses) are read too, only to report the fooling gap (guide minus referee).

Metrics per seed and method (generated vs the source face = I_ref unless said otherwise): ``ssim``,
``lpips`` (the LPIPS formula on the referees' feature maps, "LPIPS(referees)"; the paper backend when given),
``identity_similarity`` (the identity referee's cosine; the paper's "FID" column, docs/errata.md),
``clip_score`` (w = 1) and ``text_image_cosine`` vs the target caption and ``s_dir`` (caption vs
``source_caption``), all with the text-image referee; ``age_acc`` (% within ±5 y of the target), ``age_mae``,
``age_rmse``, ``emo_acc`` (%), ``pearson_valence`` / ``pearson_arousal`` / ``avd`` of the attribute referee's
(v, a) against the target emotion at its intensity, ``emotion_emd`` between the histogram of predicted
emotions and that of the targets, ``cmc`` and ``cmc_image`` (below) and ``fid`` (true Fréchet distance,
source faces vs generated faces, in the referees' pooled features :data:`FID_EXTRACTOR`; with n_samples ≤ 512
the covariance is rank-deficient and the value is a biased estimate).

Guides and the fooling gap: ``age_acc_guide``, ``age_mae_guide``, ``emo_acc_guide``,
``identity_similarity_guide``, ``clip_score_guide``; ``fooling_gap_age_y`` = age_mae_guide − age_mae (years;
negative: the guide sees the target age the referee does not) and ``fooling_gap_emo_pts`` = emo_acc_guide −
emo_acc (points; positive: the guide sees the target emotion the referee does not).

Oracle targets (synthetic world only, NaN in the paper world; :mod:`cff_lib.oracle`): ``oracle_ssim``,
``oracle_psnr`` (dB) and ``oracle_lpips_ref`` of each edit to the same person rendered at its target.

Realism: ``realism_fd`` and ``realism_kid`` (×1000) of the method's outputs against fresh renders of held-out
identities (synthetic world) or the first :data:`REALISM_REFERENCE` FFHQ test faces, at most the whole test split
(paper world; :func:`cff_lib.referees.realism_reference`), in the referees' pooled features, and
``artefact_ratio`` (band power at 4-8 px periods over the sources', ``metrics.artefact_ratio``).

CMC. The paper's CMC ("cosine similarity among the integrated embeddings of text, audio, age, and emotion")
is a property of the *conditioning*, not of the output image: ``cmc`` = per sample, the mean pairwise cosine
of the fused-space embeddings f'_T, f'_AV, f'_Age, f'_Emo present for that sample (Eq. 10, reference image
token excluded), then the mean. It exists only for a method that fuses several modalities; the text-only
baseline and the reconstruction have one or none, so their ``cmc`` is NaN ("not defined"). To compare
methods on the same footing we add ``cmc_image`` (our definition, not the paper's): per sample, the mean
over the present modalities m ∈ {T, Age, Emo, AV} of cos(CLIP_image(I_gen), f_m), with f_m ClipFaceFusion's
CLIP-space features of the sample's inputs (f_T, f_Age, f_Emo, f_AV^final; identical for every method). That
reads the guide CLIP, so it is reported as ``cmc_image_guide``; ``cmc_image`` is the referee's version: the
mean over the sample's present text-expressible modalities (T: the caption, Age: "a NN-year-old face", Emo:
"a photo of a <emotion> face") of the text-image referee's cosine between I_gen and that text.

Fig. 6, "reference-image integration": at integration r ∈ [0, 1], a fraction r of the samples (the first
round(r·B) of a seeded permutation) is conditioned *with* the reference image (the fusion's I token and
c's ArcFace/VGG slots), the rest without it (the learned "no reference" embeddings). The inversion and
everything else are unchanged. SSIM to the source and CMC are reported per r.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cff_lib import ddim, metrics
from cff_lib.captions import caption_from_attributes
from cff_lib.dataset import load_composite, load_rows
from cff_lib.emotions import EMOTIONS, valence_arousal

CFF = "ClipFaceFusion"
TEXT_ONLY = "DiffusionCLIP-style (text only)"
RECON = "Reconstruction (inversion → reverse, no condition)"
METHODS = (CFF, TEXT_ONLY, RECON)
SOURCE = "Source (unedited; calibration)"  # scored like a method (generated = source) to calibrate every metric
EVAL_PROTOCOL = 3  # bump when what evaluate() computes changes, so cached evaluations are recomputed
# (2: each method inverts with its own UNet; the reconstruction runs on the pretrained DDPM;
#  3: referees read every attribute; guides only for the fooling gap; oracle distances; realism)
FID_EXTRACTOR = "referees' pooled features (attribute + identity referee, 512-d)"
REALISM_REFERENCE = 400  # realism reference images: fresh renders (synthetic), FFHQ test faces (paper)
INVERSION_T0 = (300, 400, 500, 600)
SWEEP_FACES = 64  # faces of the inversion-fidelity table and the Fig. 6 sweep (first seed's rows, at most this)
INTEGRATION_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
CMC_MODALITIES = ("T", "AV", "Age", "Emo")
METRIC_NAMES = ("ssim", "lpips", "identity_similarity", "clip_score", "text_image_cosine", "s_dir", "age_acc",
                "age_mae", "age_rmse", "emo_acc", "pearson_valence", "pearson_arousal", "avd", "emotion_emd",
                "cmc", "cmc_image", "fid",
                "age_acc_guide", "age_mae_guide", "emo_acc_guide", "identity_similarity_guide", "clip_score_guide",
                "cmc_image_guide", "fooling_gap_age_y", "fooling_gap_emo_pts",
                "oracle_ssim", "oracle_psnr", "oracle_lpips_ref", "realism_fd", "realism_kid", "artefact_ratio")
GUIDE_METRICS = ("age_acc_guide", "age_mae_guide", "emo_acc_guide", "identity_similarity_guide",
                 "clip_score_guide", "cmc_image_guide", "fooling_gap_age_y", "fooling_gap_emo_pts")
ORACLE_METRICS = ("oracle_ssim", "oracle_psnr", "oracle_lpips_ref")
REALISM_METRICS = ("realism_fd", "realism_kid", "artefact_ratio")


# ------------------------------------------------------------------------------------------ running methods
def _check_batch(images: Any, conditions: Mapping[str, Any]) -> None:
    from cff_lib.encoder_base import check_images

    check_images(images, argument="images")
    if images.shape[0] == 0:
        raise ValueError("images is empty: nothing to edit")
    captions = conditions.get("caption") if isinstance(conditions, Mapping) else None
    if not isinstance(captions, (list, tuple)) or len(captions) != images.shape[0]:
        got = len(captions) if isinstance(captions, (list, tuple)) else type(captions).__name__
        raise ValueError(f"conditions['caption'] must hold one caption per image ({images.shape[0]}), got {got}")


@torch.no_grad()
def run_methods(model, baseline, images: torch.Tensor, conditions: Mapping[str, Any], seed: int, profile, *,
                methods: Sequence[str] = METHODS) -> dict[str, torch.Tensor]:
    """Edited images (B, 3, H, W) in [-1, 1] per method, each inverted and sampled on its own UNet
    (:func:`method_unets`; one inversion per distinct UNet).

    ``seed`` seeds torch before the run (DDIM is deterministic, so it only matters for stochastic layers).
    """
    _check_batch(images, conditions)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {METHODS}")
    if TEXT_ONLY in methods and baseline is None:
        raise ValueError(f"method {TEXT_ONLY!r} needs the baseline (cff_lib.baselines.load_or_train_baseline)")
    torch.manual_seed(int(seed))
    cfg = ddim.EditConfig.from_profile(profile)
    model.eval()
    images = images.to(model.device)
    unets = method_unets(model, baseline, methods)
    by_unet: dict[str, dict[str, torch.Tensor | None]] = {}  # the methods that share one inversion
    for m in methods:
        if m == CFF:  # 1. the condition: c of the fusion, or the caption's CLIP feature, or none
            c = model.condition({**conditions, "reference": images}).c
        elif m == TEXT_ONLY:
            c = baseline.condition(conditions["caption"])
        else:
            c = None
        by_unet.setdefault(unets[m][0], {})[m] = c
    out = {}
    for key, conds in by_unet.items():  # 2. one DDIM inversion per UNet (Eq. 9), a reverse chain per method (Eq. 30)
        unet = next(u for k, u in unets.values() if k == key)  # each chain on its own conditioning wrapper
        edits = ddim.edit_variants(unet, images, conds, cfg, samplers={m: unets[m][1] for m in conds})
        out.update({m: x.clamp(-1, 1) for m, x in edits.items()})
    return {m: out[m] for m in methods}


def pretrained_backbone(model) -> torch.nn.Module:
    """The DDPM as loaded, before any fine-tuning: ``model.unet`` itself when the model does not fine-tune its
    UNet, else ``model.pretrained_unet()`` (a copy) in a ConditionalUNet; always run with c = None here."""
    from cff_lib.conditional_unet import ConditionalUNet

    if not model.fine_tunes_unet:
        return model.unet
    return ConditionalUNet(model.pretrained_unet(), model.unet.cond_dim).to(model.device).requires_grad_(False)


def method_unets(model, baseline, methods: Sequence[str] = METHODS) -> dict[str, tuple[str, torch.nn.Module]]:
    """Per method, (which UNet, the UNet) it inverts and samples with. Methods whose UNet is the unmodified
    pretrained DDPM share the key ``"pretrained"`` (and so one inversion): ClipFaceFusion under
    ``trainable='fusion'``, a baseline that does not train its UNet, and the reconstruction always; each of them
    still samples on its own UNet (its own conditioning projection: ``ddim.edit_variants``'s ``samplers``)."""
    out = {}
    for m in methods:
        if m == CFF:
            out[m] = ("clipfacefusion" if model.fine_tunes_unet else "pretrained", model.unet)
        elif m == TEXT_ONLY:
            out[m] = ("baseline" if baseline.train_unet else "pretrained", baseline.unet)
        else:
            out[m] = ("pretrained", pretrained_backbone(model))
    return out


# ------------------------------------------------------------------------------------------ eval pool
def eval_pool(profile, samples=None) -> list:
    """Held-out composite rows with a face, a target age and a target emotion (``control.control_rows``)."""
    from cff_lib.control import control_rows

    return control_rows(samples if samples is not None else load_composite(profile).split("val"))


def seed_rows(pool: Sequence, seed: int, n: int) -> list:
    """``n`` rows of ``pool`` drawn without replacement by ``default_rng(seed)`` (all of it if n ≥ len)."""
    if len(pool) == 0:
        raise ValueError("the evaluation pool is empty")
    if n <= 0 or n >= len(pool):
        return list(pool)
    idx = np.sort(np.random.default_rng(int(seed)).choice(len(pool), size=n, replace=False))
    return [pool[i] for i in idx]


# ------------------------------------------------------------------------------------------ metrics
def _cmc_per_sample(cond) -> np.ndarray:
    """Paper CMC per sample over the present modalities of CMC_MODALITIES (NaN with fewer than two)."""
    norm, present = cond.fusion.normalized, cond.fusion.present
    out = []
    for i in range(cond.c.shape[0]):
        feats = {k: norm[k][i:i + 1] for k in CMC_MODALITIES if k in norm and bool(present[k][i])}
        out.append(metrics.cross_modal_consistency(feats).mean if len(feats) >= 2 else float("nan"))
    return np.asarray(out)


@torch.no_grad()
def _cmc_image(clip, generated: torch.Tensor, cond) -> np.ndarray:
    """Our image-grounded CMC per sample: mean cos(CLIP_image(I_gen), f_m) over present m (module doc)."""
    f_img = F.normalize(clip.encode_image(generated).double(), dim=-1)
    x = cond.inputs
    feats = {"T": (cond.text, torch.ones_like(x.has_age)), "Age": (cond.age, x.has_age),
             "Emo": (cond.emotion, x.has_emotion | x.has_audio), "AV": (cond.av_final, x.has_audio)}
    cos_sum = torch.zeros(generated.shape[0], dtype=torch.float64)
    count = torch.zeros(generated.shape[0], dtype=torch.float64)
    for f, has in feats.values():
        cos = (f_img * F.normalize(f.double(), dim=-1)).sum(-1).cpu()
        cos_sum += torch.where(has.cpu(), cos, torch.zeros_like(cos))
        count += has.cpu().double()
    return (cos_sum / count).numpy()


def _targets(conditions: Mapping[str, Any]) -> tuple[np.ndarray, list[str], np.ndarray]:
    ages = np.asarray([float(a) for a in conditions["target_age"]])
    emos = list(conditions["target_emotion"])
    inten = [1.0 if i is None else float(i) for i in conditions.get("intensity") or [None] * len(emos)]
    va = np.asarray([valence_arousal(e, i) for e, i in zip(emos, inten, strict=True)])
    return ages, emos, va


@torch.no_grad()
def _cmc_image_referee(clip, generated: torch.Tensor, conditions: Mapping[str, Any]) -> np.ndarray:
    """The referee's image-grounded CMC per sample (module docstring): mean text-image referee cosine between
    I_gen and the text form of each present modality (caption; age; emotion)."""
    from cff_lib.encoders import EMOTION_PROMPT

    n = generated.shape[0]
    f_img = F.normalize(clip.encode_image(generated).double(), dim=-1)
    ages = conditions.get("target_age") or [None] * n
    emos = conditions.get("target_emotion") or [None] * n
    texts = [[conditions["caption"][i]] + ([caption_from_attributes(float(ages[i]), None, None)]
                                           if ages[i] is not None else [])
             + ([EMOTION_PROMPT.format(emos[i])] if emos[i] is not None else []) for i in range(n)]
    out = []
    for i, ts in enumerate(texts):
        f_txt = F.normalize(clip.encode_text(ts).double(), dim=-1)  # (m, D)
        out.append(float((f_txt @ f_img[i]).mean()))
    return np.asarray(out)


@dataclass
class MetricContext:
    """The frozen judges of one evaluation (built once by :func:`metric_context`): the referees (evidence; their
    pooled features are the Fréchet-distance space), the guide CLIP (fooling gap only), the referee LPIPS,
    the oracle switch and the realism reference features."""

    referees: Any  # cff_lib.referees.Referees
    guide_clip: Any  # the model's CLIP (a guide: read only for the fooling gap and cmc_image_guide)
    lpips: metrics.Lpips
    profile: Any = None  # the profile (oracle targets are rendered from its world)
    realism_features: np.ndarray | None = None  # (N, D) referee features of the realism reference

    @property
    def clip(self):  # the text-image judge of every reported CLIP metric is the referee's
        return self.referees.clip


def metric_context(model, referees=None, lpips_backend: str = "synthetic", profile=None,
                   realism_n: int = REALISM_REFERENCE) -> MetricContext:
    """Judges for :func:`score`. ``referees`` default to :func:`cff_lib.referees.load_referees` of ``profile``
    (FileNotFoundError naming the missing files where there are none, e.g. the paper world)."""
    from cff_lib.referees import load_referees, realism_reference, realism_reference_size

    if referees is None:
        if profile is None:
            raise ValueError("metric_context needs referees or the profile to load them from")
        referees = load_referees(profile)
    lp = (metrics.Lpips("synthetic", vgg=referees.feature_maps) if lpips_backend == "synthetic"
          else metrics.Lpips("paper"))
    if lpips_backend == "synthetic":
        lp.name = "LPIPS(referees)"
    feats = None
    if profile is not None and realism_n:  # the paper world's reference is its FFHQ test split, at most all of it
        available = realism_reference_size(profile)
        n = realism_n if available is None else min(int(realism_n), available)
        if n >= 2:
            feats = referees.features(realism_reference(profile, n))
    return MetricContext(referees=referees, guide_clip=model.encoders.multimodal.clip, lpips=lp,
                         profile=profile, realism_features=feats)


@torch.no_grad()
def score(model, ctx: MetricContext, generated: torch.Tensor, source: torch.Tensor, conditions, cond,
          method: str, rows: Sequence | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(summary per metric, per-sample arrays) of one method's edits of ``source`` toward ``conditions``.

    Referees read every reported attribute; guides are read for the fooling gap (module docstring).
    ``rows`` (the composite rows) enable the oracle distances in the synthetic world."""
    from cff_lib import oracle

    metrics._check_pair(generated, source, ("generated", "source"))
    if len(conditions["caption"]) != generated.shape[0]:
        raise ValueError(f"conditions hold {len(conditions['caption'])} captions for {generated.shape[0]} images")
    enc, ref = model.encoders, ctx.referees
    gen_cpu, src_cpu = generated.detach().cpu(), source.detach().cpu()
    ages, emos, va_t = _targets(conditions)
    emo_idx = np.asarray([EMOTIONS.index(e) for e in emos])
    reading = ref.read(gen_cpu)  # 1. the referees (evidence)
    am = metrics.age_metrics(reading["age"], ages)
    pred = reading["emotion_probs"].argmax(1)
    vam = metrics.valence_arousal_metrics(reading["valence_arousal"], va_t)
    g_age = enc.age(generated).age.cpu().numpy()  # 2. the guides (fooling gap only)
    g_pred = enc.emotion(generated).logits.argmax(1).cpu().numpy()
    captions = list(conditions["caption"])
    per = {"ssim": np.asarray(metrics.ssim(generated, source).per_item),
           "lpips": np.asarray(ctx.lpips(gen_cpu, src_cpu).per_item),
           "identity_similarity": ref.identity_similarity(gen_cpu, src_cpu),
           "clip_score": np.asarray(metrics.clip_score(ctx.clip, gen_cpu, captions).per_item),
           "text_image_cosine": np.asarray(metrics.text_image_cosine(ctx.clip, gen_cpu, captions).per_item),
           "s_dir": np.asarray(metrics.directional_clip_similarity(
               ctx.clip, gen_cpu, src_cpu, captions, list(conditions["source_caption"])).per_item),
           "age_acc": 100.0 * (np.abs(reading["age"] - ages) <= am.tolerance + 1e-9),
           "age_abs_err": np.abs(reading["age"] - ages),
           "emo_acc": 100.0 * (pred == emo_idx),
           "avd": np.asarray(vam.avd_per_item),
           "cmc": _cmc_per_sample(cond) if method == CFF else np.full(len(ages), np.nan),
           "cmc_image": _cmc_image_referee(ctx.clip, gen_cpu, conditions),
           "age_acc_guide": 100.0 * (np.abs(g_age - ages) <= am.tolerance + 1e-9),
           "age_abs_err_guide": np.abs(g_age - ages),
           "emo_acc_guide": 100.0 * (g_pred == emo_idx),
           "identity_similarity_guide": np.asarray(metrics.identity_similarity(enc.arcface, generated,
                                                                               source).per_item),
           "clip_score_guide": np.asarray(metrics.clip_score(ctx.guide_clip, generated, captions).per_item),
           "cmc_image_guide": _cmc_image(ctx.guide_clip, generated, cond)}
    per["fooling_gap_age_y"] = per["age_abs_err_guide"] - per["age_abs_err"]
    per["fooling_gap_emo_pts"] = per["emo_acc_guide"] - per["emo_acc"]
    if rows is not None and ctx.profile is not None and oracle.has_oracle(ctx.profile):  # 3. the oracle
        per.update(oracle.oracle_distances(ref, gen_cpu, oracle.oracle_targets(ctx.profile, rows)))
    else:
        per.update({k: np.full(len(ages), np.nan) for k in ORACLE_METRICS})
    per["band_power"] = metrics.band_power(gen_cpu)  # 4. realism
    summary = {k: float(np.mean(v)) for k, v in per.items()
               if k not in ("age_abs_err", "age_abs_err_guide", "band_power", "oracle_mse")}
    feats = ref.features(gen_cpu)  # (B, D) referee features: FD to the sources and realism
    if ctx.realism_features is not None and len(feats) >= 2:
        m = min(100, len(feats), len(ctx.realism_features))
        realism_fd = metrics.frechet_distance(feats, ctx.realism_features)
        realism_kid = 1000.0 * metrics.kernel_inception_distance(feats, ctx.realism_features, subset_size=m)[0]
    else:
        realism_fd = realism_kid = float("nan")
    summary.update(age_mae=am.mae, age_rmse=am.rmse, pearson_valence=vam.pearson_valence,
                   pearson_arousal=vam.pearson_arousal,
                   emotion_emd=metrics.emotion_emd(metrics.emotion_histogram(pred), metrics.emotion_histogram(emos)),
                   fid=(metrics.frechet_distance(ref.features(src_cpu), feats) if source.shape[0] >= 2
                        else float("nan")),
                   age_mae_guide=float(np.mean(per["age_abs_err_guide"])),
                   realism_fd=realism_fd, realism_kid=realism_kid,
                   artefact_ratio=float(per["band_power"].mean()
                                        / max(metrics.band_power(src_cpu).mean(), 1e-12)))
    if method != CFF:
        summary["cmc"] = float("nan")
    return summary, per


@dataclass
class Evaluation:
    """Per-seed metric values per method (mean ± std via :meth:`results`) and per-sample values."""

    seeds: tuple[int, ...]
    per_seed: dict[str, dict[str, list[float]]]  # method -> metric -> one value per seed
    per_sample: dict[str, dict[str, list[np.ndarray]]]  # method -> metric -> one array per seed
    rows: dict[int, list[str]]  # seed -> face paths evaluated
    wall_s: float
    notes: dict[str, str] = field(default_factory=dict)

    def results(self, method: str) -> metrics.SeedResults:
        if method not in self.per_seed:
            raise ValueError(f"method {method!r} was not evaluated; have {sorted(self.per_seed)}")
        r = metrics.SeedResults(self.seeds)
        for k in METRIC_NAMES:
            r = r.with_metric(k, self.per_seed[method][k])
        return r

    def table(self, metric_names: Sequence[str] = METRIC_NAMES, digits: int = 4):
        """pandas DataFrame: one row per method, ``metric`` = "mean ± std" over seeds (NaN = not defined)."""
        import pandas as pd

        rows = []
        for m in self.per_seed:
            r = self.results(m)
            rows.append({"method (measured here)": m, **{k: _fmt(r, k, digits) for k in metric_names}})
        return pd.DataFrame(rows)

    def mean_std(self, method: str, metric: str) -> tuple[float, float]:
        return self.results(method).summary(metric)


def _fmt(r: metrics.SeedResults, k: str, digits: int) -> str:
    vals = np.asarray(r.values[k], dtype=float)
    if np.isnan(vals).all():
        return "n/a"
    m, s = float(np.nanmean(vals)), (float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else float("nan"))
    return f"{m:.{digits}g} ± {s:.2g}" if math.isfinite(s) else f"{m:.{digits}g}"


def evaluate(model, baseline, profile, *, seeds: Sequence[int] | None = None, n_samples: int | None = None,
             pool=None, methods: Sequence[str] = METHODS, lpips_backend: str = "synthetic",
             referees=None, progress: bool = True) -> Evaluation:
    """Run :func:`run_methods` and :func:`score` for every seed (module docstring); profile defaults.
    ``referees`` default to the profile's (:func:`cff_lib.referees.load_referees`)."""
    from tqdm.auto import tqdm

    seeds = tuple(int(s) for s in (seeds if seeds is not None else profile.eval.seeds))
    if not seeds:
        raise ValueError("seeds is empty: evaluation needs at least one seed")
    n = int(n_samples) if n_samples else profile.eval.n_samples
    pool = eval_pool(profile) if pool is None else list(pool)
    ctx = metric_context(model, referees, lpips_backend, profile)
    per_seed = {m: {k: [] for k in METRIC_NAMES} for m in methods}
    per_sample = {m: {} for m in methods}
    used, start = {}, time.perf_counter()
    for seed in tqdm(seeds, desc="evaluation seeds", disable=not progress):
        rows = seed_rows(pool, seed, n)
        used[seed] = [r.image for r in rows]
        images, conds = load_rows(profile, rows)
        outs = run_methods(model, baseline, images, conds, seed, profile, methods=methods)
        with torch.no_grad():
            cond = model.condition({**conds, "reference": images.to(model.device)})
        outs[SOURCE] = images.to(model.device)  # calibration: what "no edit at all" scores
        for m, gen in outs.items():
            summary, per = score(model, ctx, gen, images.to(gen.device), conds, cond, m, rows=rows)
            for k in METRIC_NAMES:
                per_seed.setdefault(m, {k: [] for k in METRIC_NAMES})[k].append(summary[k])
            for k, v in per.items():
                per_sample.setdefault(m, {}).setdefault(k, []).append(v)
    return Evaluation(seeds, per_seed, per_sample, used, time.perf_counter() - start)


def _cache_key(model, baseline_info: Mapping[str, Any], profile, seeds, n, methods) -> dict[str, Any]:
    from cff_lib.model import MODEL_FILE, weights_root
    from cff_lib.referees import referee_paths
    from cff_lib.weights import sha256_file

    trained = weights_root(profile) / MODEL_FILE
    refs = {k: sha256_file(p) if p.is_file() else "absent" for k, p in referee_paths(weights_root(profile)).items()}
    return {"protocol": EVAL_PROTOCOL, "profile": profile.name, "fingerprint": profile.fingerprint(),
            "seeds": list(seeds), "n_samples": n,
            "methods": list(methods), "backends": dict(model.backend_digests),
            "model_sha256": sha256_file(trained) if trained.is_file() else "absent",
            "baseline_sha256": baselines_sha(baseline_info), "referees_sha256": refs}


def baselines_sha(info: Mapping[str, Any]) -> str:
    from cff_lib.weights import sha256_file

    return sha256_file(info["path"]) if info.get("path") and Path(info["path"]).is_file() else "absent"


def evaluate_cached(model, baseline, baseline_info: Mapping[str, Any], profile, cache_dir=None, *,
                    n_samples: int | None = None, methods: Sequence[str] = METHODS) -> tuple[Evaluation, str]:
    """:func:`evaluate`, reusing ``cache_dir/evaluation.json`` (default build/eval/<profile>/) when it was
    made for the same profile, seeds, sample count, methods and weight files (sha256); returns (evaluation,
    provenance line). Notebook 06 writes it, notebook 07 reads it, so both report the same run."""
    import json

    from cff_lib.atomic import atomic_write_text
    from cff_lib.provenance import REPO_ROOT

    seeds, n = tuple(profile.eval.seeds), int(n_samples) if n_samples else profile.eval.n_samples
    key = _cache_key(model, baseline_info, profile, seeds, n, METHODS)
    path = Path(cache_dir) if cache_dir else REPO_ROOT / "build" / "eval" / profile.name
    path = path / "evaluation.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("key") == key and all(m in data["per_seed"] for m in methods):
            kept = [m for m in data["per_seed"] if m in methods or m == SOURCE]
            ev = Evaluation(tuple(data["seeds"]), {m: data["per_seed"][m] for m in kept},
                            {m: {k: [np.asarray(a) for a in v] for k, v in data["per_sample"][m].items()}
                             for m in kept}, {int(k): v for k, v in data["rows"].items()}, data["wall_s"])
            return ev, f"loaded {path} (made {data['date']}, same weights sha256, seeds and samples)"
    ev = evaluate(model, baseline, profile, seeds=seeds, n_samples=n, methods=METHODS)
    import datetime as dt

    date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    blob = {"key": key, "date": date, "seeds": list(ev.seeds), "per_seed": ev.per_seed, "wall_s": ev.wall_s,
            "per_sample": {m: {k: [a.tolist() for a in v] for k, v in d.items()} for m, d in ev.per_sample.items()},
            "rows": {str(k): v for k, v in ev.rows.items()}}
    atomic_write_text(path, json.dumps(blob, default=float) + "\n")
    return ev, f"computed now in {ev.wall_s:.1f} s and saved to {path}"


# ------------------------------------------------------------------------------------------ inversion fidelity
def psnr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-pair PSNR in dB of images in [-1, 1] rescaled to [0, 1] (peak 1); inf for identical images."""
    metrics._check_pair(a, b)
    mse = (((a.double() + 1) / 2 - (b.double() + 1) / 2) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse)).cpu().numpy()


@torch.no_grad()
def inversion_fidelity(model, profile, images: torch.Tensor, t0s: Sequence[int] = INVERSION_T0,
                       lpips_backend: str = "synthetic", referees=None):
    """Reconstruction (invert to t0, reverse with c = None) before any edit: PSNR, LPIPS, identity per t0.

    Rows for the pretrained DDPM as loaded (``unet = "pretrained DDPM"``) and, when the model fine-tunes its
    UNet (``trainable='fusion+unet'``), for ClipFaceFusion's UNet with c = None too (``"ClipFaceFusion UNet"``):
    what fine-tuning costs the unconditioned chain."""
    import pandas as pd

    _check_batch(images, {"caption": [""] * int(getattr(images, "shape", [0])[0])})
    ctx = metric_context(model, referees, lpips_backend, profile, realism_n=0)
    d, rows = profile.ddim, []
    unets = [("pretrained DDPM", pretrained_backbone(model))]
    if model.fine_tunes_unet:
        unets.append(("ClipFaceFusion UNet", model.unet))
    for name, unet in unets:
        for t0 in t0s:
            steps = min(d.n_gen_steps, int(t0))
            rec = ddim.edit(unet, images, None, int(t0), steps, steps, spacing=d.spacing).clamp(-1, 1)
            rows.append({"unet": name, "t0": int(t0), "n_images": images.shape[0], "steps": steps,
                         "psnr_db": float(np.mean(psnr(rec, images))), "lpips": ctx.lpips(rec, images).mean,
                         "identity_similarity": float(ctx.referees.identity_similarity(rec.cpu(),
                                                                                       images.cpu()).mean()),
                         "ssim": metrics.ssim(rec, images).mean})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ Fig. 6 sweep
@torch.no_grad()
def integration_sweep(model, profile, images: torch.Tensor, conditions: Mapping[str, Any], seed: int,
                      levels: Sequence[float] = INTEGRATION_LEVELS, referees=None):
    """SSIM (to the source), CMC and the identity referee's similarity vs reference-image integration r."""
    import pandas as pd

    if referees is None:
        from cff_lib.referees import load_referees

        referees = load_referees(profile)
    _check_batch(images, conditions)
    if any(not 0.0 <= float(r) <= 1.0 for r in levels):
        raise ValueError(f"levels={list(levels)} must lie in [0, 1]")
    b = images.shape[0]
    with_ref = model.condition({**conditions, "reference": images})
    without = model.condition({k: v for k, v in conditions.items() if k != "reference"})
    cmc_with, cmc_without = _cmc_per_sample(with_ref), _cmc_per_sample(without)
    order = np.random.default_rng(int(seed)).permutation(b)
    uses, conds = {}, {}
    for i, r in enumerate(levels):
        use = np.zeros(b, dtype=bool)
        use[order[:int(round(float(r) * b))]] = True
        mask = torch.from_numpy(use)[:, None].to(with_ref.c.device)
        uses[i], conds[i] = use, torch.where(mask, with_ref.c, without.c)
    edits = ddim.edit_variants(model.unet, images, conds, ddim.EditConfig.from_profile(profile))
    rows = []
    for i, r in enumerate(levels):
        use, gen = uses[i], edits[i].clamp(-1, 1)
        cmc = np.where(use, cmc_with, cmc_without)
        rows.append({"integration": float(r), "n_with_reference": int(use.sum()), "n": b,
                     "ssim": metrics.ssim(gen, images).mean, "cmc": float(np.nanmean(cmc)),
                     "identity_similarity": float(referees.identity_similarity(gen.cpu(), images.cpu()).mean())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ Table 6 pairs
def paired_values(ev: Evaluation, metric: str, a: str = CFF, b: str = TEXT_ONLY, unit: str = "seed"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(a values, b values) paired per seed (``unit="seed"``) or per held-out face (``"sample"``).

    Per sample, a face drawn by several seeds counts once (its values averaged over its draws; DDIM is
    deterministic, so repeated draws of a row are copies and would inflate n)."""
    for m in (a, b):
        if m not in ev.per_seed:
            raise ValueError(f"method {m!r} was not evaluated")
    if unit == "seed":
        return np.asarray(ev.per_seed[a][metric]), np.asarray(ev.per_seed[b][metric])
    if unit == "sample":
        keys = [face for seed in ev.seeds for face in ev.rows[seed]]
        va, vb = np.concatenate(ev.per_sample[a][metric]), np.concatenate(ev.per_sample[b][metric])
        if len(keys) != len(va) or len(va) != len(vb):
            raise ValueError(f"per-sample {metric!r} holds {len(va)} / {len(vb)} values for {len(keys)} faces")
        first: dict[str, int] = {}  # face -> its position in first-draw order
        index = np.asarray([first.setdefault(k, len(first)) for k in keys])
        count = np.bincount(index, minlength=len(first))
        return np.bincount(index, va, len(first)) / count, np.bincount(index, vb, len(first)) / count
    raise ValueError(f"unit={unit!r} must be 'seed' or 'sample'")


def ttest_table(ev: Evaluation, metrics_: Sequence[str] = ("emo_acc", "age_acc", "cmc_image", "ssim",
                                                           "identity_similarity", "s_dir"),
                unit: str = "seed", alpha: float = 0.05):
    """Table 6: ``stats.paired_tests_table`` of ClipFaceFusion (a) vs the text-only baseline (b)."""
    from cff_lib.stats import paired_tests_table

    table = paired_tests_table({m: paired_values(ev, m, unit=unit) for m in metrics_}, alpha=alpha)
    table.insert(1, "pairs", f"per {unit}")
    return table


__all__ = ["CFF", "METHODS", "METRIC_NAMES", "RECON", "SOURCE", "TEXT_ONLY", "Evaluation", "MetricContext",
           "eval_pool", "evaluate", "evaluate_cached", "integration_sweep", "inversion_fidelity", "method_unets",
           "metric_context", "paired_values", "pretrained_backbone", "psnr", "run_methods", "score", "seed_rows",
           "ttest_table"]
