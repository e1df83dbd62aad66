"""Ablations and sweeps as data: overlays on a profile (paper "Ablation studies", Tables 7 and 8).

An **overlay** is a small nested mapping of changed settings, section -> key -> value, e.g.
``{"loss": {"lambda_id": 0.8}}``. :func:`apply_overlay` merges it into a profile the way a preset overrides
the preset it ``extends:`` (:func:`cff_lib.config.with_changes`, the presets' own builder and checks), so an
unknown key, a wrong type or a value out of range is an :class:`OverlayError` naming the key. An ablation
row or a sweep point is a :class:`Variant`, a named overlay; never a code branch in a notebook.

- :data:`ABLATIONS`: Table 7's eleven rows, in the table's order. Each is expressed through profile
  settings: loss weights set to 0, or one of the model switches ``model.drop_inputs``, ``model.fusion``,
  ``model.av_alignment``, ``model.reference_in_condition`` (cff_lib.config; what replaces each removed part
  is in docs/errata.md, "Ablations"); ``cff_lib.model.build_model`` passes all four to the model.
  :data:`PENDING_MODEL_SWITCHES` lists switches ``cff_lib.model`` does not read yet (none now);
  :attr:`Variant.needs_model` names them per row, and :func:`pending_switches` lets a trainer refuse a
  profile that would silently train the full model.
- :data:`SWEEP`: Table 8's six settings, one at a time around the base (:func:`sweep_points`). A point whose
  value is the base's own resolves to the base profile, so a run store keyed by the resolved settings
  trains it once.
- :data:`NO_RETRAIN`: settings that leave the trained parameters unchanged (DDIM steps at inference, the
  evaluation's seeds and size, the runner's time limits). A variant that changes only those reuses the
  parameters trained without them (:func:`split_overlay`, :attr:`Variant.inference_only`). The training chain's
  own length, ``ddim.n_train_steps`` capped by ``n_inv_steps``/``n_gen_steps``
  (``training.train_ddim_steps``), is then the base's.
"""
from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cff_lib.config import ModelConfig, Profile, ProfileError, with_changes


class OverlayError(ProfileError):
    """An unknown ablation or sweep setting, or an overlay whose keys or values do not fit the profile."""


NO_RETRAIN = frozenset({"ddim.n_inv_steps", "ddim.n_gen_steps", "ddim.edit_t0", "ddim.preserve_threshold",
                        "eval.seeds", "eval.n_samples", "runner.cell_timeout_s", "runner.notebook_budget_s"})
"""Dotted settings that do not change the trained parameters: changing them needs no retraining."""

PENDING_MODEL_SWITCHES: frozenset[str] = frozenset()
"""Profile switches ``cff_lib.model`` does not honour yet (issue 12); add a new switch here until the model
reads it. Empty: ``model.drop_inputs``, ``model.fusion``, ``model.av_alignment`` and
``model.reference_in_condition`` are all honoured (``cff_lib.model.ClipFaceFusion``)."""


# ------------------------------------------------------------------------------------------ overlay plumbing
def freeze(overlay: Mapping) -> Mapping:
    """A read-only copy of ``overlay``: nested mappings as ``MappingProxyType``, lists as tuples."""
    if not isinstance(overlay, Mapping):
        raise OverlayError(f"an overlay must be a mapping of sections, got {type(overlay).__name__} {overlay!r}")
    return types.MappingProxyType({str(k): _freeze_value(v) for k, v in overlay.items()})


def _freeze_value(value):
    if isinstance(value, Mapping):
        return freeze(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_value(v) for v in value)
    return value


def thaw(overlay: Mapping) -> dict:
    """A plain, JSON-ready copy of ``overlay``: dicts and lists."""
    def plain(value):
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(overlay)


def flatten(overlay: Mapping) -> dict:
    """``{"loss": {"lambda_id": 0.8}}`` -> ``{"loss.lambda_id": 0.8}`` (``data.mix`` stays one value)."""
    out: dict = {}
    for section, values in overlay.items():
        if not isinstance(values, Mapping):
            raise OverlayError(f"overlay section {section!r} must be a mapping of settings, got "
                               f"{type(values).__name__} {values!r}")
        for key, value in values.items():
            out[f"{section}.{key}"] = value
    return out


def nest(flat: Mapping[str, object]) -> dict:
    """``{"loss.lambda_id": 0.8}`` -> ``{"loss": {"lambda_id": 0.8}}``."""
    out: dict = {}
    for dotted, value in flat.items():
        section, sep, key = str(dotted).partition(".")
        if not sep or not key or "." in key:
            raise OverlayError(f"setting {dotted!r} must be 'section.key', e.g. 'loss.lambda_id'")
        out.setdefault(section, {})[key] = value
    return out


def apply_overlay(profile: Profile, overlay: Mapping, *, label: str = "overlay") -> Profile:
    """A new frozen profile: ``profile`` with ``overlay`` merged in and validated like a preset; ``profile``
    is untouched. Errors name ``label``, the profile and the offending key."""
    if not isinstance(profile, Profile):
        raise OverlayError(f"profile must be a cff_lib.config.Profile, got {type(profile).__name__}")
    if not isinstance(overlay, Mapping):
        raise OverlayError(f"{label}: an overlay must be a mapping of sections, got "
                           f"{type(overlay).__name__} {overlay!r}")
    try:
        return with_changes(profile, thaw(overlay), where=f"{label} on {profile.name}: overlay")
    except OverlayError:
        raise
    except ProfileError as err:
        raise OverlayError(str(err)) from None


def split_overlay(overlay: Mapping) -> tuple[dict, dict]:
    """(the part that changes the trained parameters, the part in :data:`NO_RETRAIN`), each nested."""
    flat = flatten(overlay)
    training = {k: v for k, v in flat.items() if k not in NO_RETRAIN}
    inference = {k: v for k, v in flat.items() if k in NO_RETRAIN}
    return thaw(nest(training)), thaw(nest(inference))


def pending_switches(profile: Profile) -> list[str]:
    """The :data:`PENDING_MODEL_SWITCHES` ``profile`` sets away from their default, as ``key=value``."""
    defaults = {f"model.{f.name}": f.default for f in dataclasses.fields(ModelConfig)}
    out = []
    for dotted in sorted(PENDING_MODEL_SWITCHES):
        value = getattr(profile.model, dotted.split(".", 1)[1])
        if value != defaults[dotted]:
            out.append(f"{dotted}={list(value) if isinstance(value, tuple) else value!r}")
    return out


# ------------------------------------------------------------------------------------------ named variants
@dataclass(frozen=True)
class Variant:
    name: str  # the row's label as the paper prints it ("w/o audio", "λ_ID = 0.8")
    key: str  # file- and command-line-safe name ("no_audio", "lambda_id=0.8")
    overlay: Mapping = field(default_factory=dict)  # the changed settings, frozen; {} is the base itself
    note: str = ""  # what the row removes and what replaces it (docs/errata.md, "Ablations")

    def __post_init__(self) -> None:
        for name in ("name", "key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise OverlayError(f"Variant.{name} must be a non-empty string, got {getattr(self, name)!r}")
        object.__setattr__(self, "overlay", freeze(self.overlay))
        flatten(self.overlay)  # every section a mapping

    @property
    def inference_only(self) -> bool:
        """True when the variant changes settings and all of them are in :data:`NO_RETRAIN`: it needs no
        training of its own (the parameters trained without the change serve)."""
        training, inference = split_overlay(self.overlay)
        return bool(inference) and not training

    @property
    def needs_model(self) -> tuple[str, ...]:
        """The switches this variant sets that ``cff_lib.model`` does not honour yet."""
        return tuple(sorted(k for k in flatten(self.overlay) if k in PENDING_MODEL_SWITCHES))

    def apply(self, profile: Profile) -> Profile:
        """``profile`` with this variant's overlay (:func:`apply_overlay`)."""
        return apply_overlay(profile, self.overlay, label=self.name)

    def to_dict(self) -> dict:
        return {"name": self.name, "key": self.key, "overlay": thaw(self.overlay), "note": self.note,
                "inference_only": self.inference_only, "needs_model": list(self.needs_model)}


def _ablation(name: str, key: str, overlay: dict, note: str) -> Variant:
    return Variant(name=name, key=key, overlay=overlay, note=note)


_ABSENT = ("the model treats every sample as if {what} were not given: no token, nothing derived from it, "
           "no loss term whose target it is (the path of a batch row without it)")

ABLATIONS: dict[str, Variant] = {v.key: v for v in (
    _ablation("full", "full", {}, "the profile itself (its recipe is the full configuration)"),
    _ablation("w/o audio", "no_audio", {"model": {"drop_inputs": ["audio"]}},
              _ABSENT.format(what="the voice clip") + ": no f_A, no AV token, f_Emo from text alone, no L_AV"),
    _ablation("w/o age", "no_age", {"model": {"drop_inputs": ["age"]}},
              _ABSENT.format(what="the target age") + ": no Age token (Eqs. 4-5), no L_Age,total; the "
              "caption still words the age"),
    _ablation("w/o emotion", "no_emotion", {"model": {"drop_inputs": ["emotion"]}},
              _ABSENT.format(what="the emotion") + ": no Emo token (Eq. 7, neither its text nor its audio "
              "route), no L_Emo,total; audio still forms the AV token (Eq. 16)"),
    _ablation("w/o text", "no_text", {"model": {"drop_inputs": ["text"]}},
              _ABSENT.format(what="the text T") + ": no T token, no directional CLIP loss"),
    _ablation("w/o multi-modal fusion", "no_fusion", {"model": {"fusion": "mean"}},
              "Eqs. 11-12 replaced by the mean of the present LayerNormed tokens f'_m (Eq. 10): no attention, "
              "no FFN, no modality-type embeddings"),
    _ablation("w/o audio-visual alignment", "no_av_alignment",
              {"model": {"av_alignment": False}, "loss": {"lambda_av": 0.0}},
              "no W_A projection and no Eq. 16 mix: no AV token; audio reaches c only through f_Emo,Audio "
              "(Eq. 7); L_AV, the module's consistency loss, off"),
    _ablation("w/o age & emotion losses", "no_age_emotion_losses",
              {"loss": {"lambda_age": 0.0, "lambda_emo": 0.0}},
              "λ_Age = λ_Emo = 0: L_Age,total and L_Emo,total (regularisers included) off"),
    _ablation("w/o identity preservation", "no_identity", {"loss": {"lambda_id": 0.0}},
              "λ_ID = 0: L_ID (ArcFace + perceptual) off; lambda_l1_source (not in the paper) as the base has it"),
    _ablation("w/o CMC loss", "no_cmc", {"loss": {"lambda_cross_modal": 0.0}},
              "λ_Cross-Modal = 0: the cross-modal consistency loss off"),
    _ablation("w/o I_ref integration", "no_reference", {"model": {"reference_in_condition": False}},
              "c's ArcFace and VGG-16 slots hold the learned 'no reference' embeddings for every sample; I_ref "
              "is still inverted (Eq. 9), still f_I, and still the losses' reference"),
)}
"""Table 7's rows by key, in the table's order."""


def _normal(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").split())


def ablation(name: str) -> Variant:
    """Table 7's row by its key (``no_audio``) or its label (``w/o audio``, any case)."""
    if isinstance(name, Variant):
        return name
    wanted = _normal(name)
    for v in ABLATIONS.values():
        if wanted in (_normal(v.key), _normal(v.name)):
            return v
    raise OverlayError(f"unknown ablation {name!r}; Table 7's rows: "
                       + ", ".join(f"{v.key} ({v.name})" for v in ABLATIONS.values()))


def ablations(profile: Profile | None = None, names: Sequence[str] | None = None) -> list[Variant]:
    """The named rows (default all eleven); with ``profile``, each is applied once to check it fits."""
    chosen = [ablation(n) for n in names] if names is not None else list(ABLATIONS.values())
    if profile is not None:
        for v in chosen:
            v.apply(profile)
    return chosen


# ------------------------------------------------------------------------------------------ Table 8's sweep
@dataclass(frozen=True)
class SweepSetting:
    name: str  # Table 8's label ("λ_ID", "DDIM steps")
    key: str  # short name ("lambda_id", "ddim_steps")
    settings: tuple[str, ...]  # dotted profile settings it sets, all to the same value
    values: tuple  # Table 8's values, in its order
    optimum: object  # the value Table 8 marks "(optimal)"

    def __post_init__(self) -> None:
        nest({k: None for k in self.settings})  # each "section.key"
        if not self.values:
            raise OverlayError(f"sweep setting {self.key!r} needs at least one value")

    @property
    def inference_only(self) -> bool:
        """True when every setting is in :data:`NO_RETRAIN` (the DDIM steps): no retraining."""
        return all(s in NO_RETRAIN for s in self.settings)

    def point(self, value) -> Variant:
        """The variant that sets this setting to ``value`` (checked against a profile when applied)."""
        shown = str(value)
        return Variant(name=f"{self.name} = {shown}", key=f"{self.key}={shown}",
                       overlay=nest({s: value for s in self.settings}),
                       note=f"Table 8: {self.name} = {shown}, everything else as the base"
                            + (" (inference only: the base's trained parameters)" if self.inference_only else ""))


SWEEP: dict[str, SweepSetting] = {s.key: s for s in (
    SweepSetting("λ_ID", "lambda_id", ("loss.lambda_id",), (0.8, 1.0, 1.4), 1.0),
    SweepSetting("λ_AV", "lambda_av", ("loss.lambda_av",), (0.2, 0.5, 0.8), 0.5),
    SweepSetting("λ_Age", "lambda_age", ("loss.lambda_age",), (0.2, 0.4, 0.7), 0.4),
    SweepSetting("λ_Emo", "lambda_emo", ("loss.lambda_emo",), (0.2, 0.4, 0.7), 0.4),
    SweepSetting("DDIM steps", "ddim_steps", ("ddim.n_inv_steps", "ddim.n_gen_steps"), (20, 50, 100), 50),
    SweepSetting("learning rate", "learning_rate", ("train.learning_rate",), (1e-5, 2e-5, 3e-5), 2e-5),
)}
"""Table 8's settings by key, in its order; DDIM steps set inversion and sampling alike (Table 3: 50)."""


def sweep_setting(name: str) -> SweepSetting:
    """Table 8's setting by key (``lambda_id``) or label (``λ_ID``, any case)."""
    wanted = _normal(name)
    for s in SWEEP.values():
        if wanted in (_normal(s.key), _normal(s.name)):
            return s
    raise OverlayError(f"unknown sweep setting {name!r}; Table 8's: "
                       + ", ".join(f"{s.key} ({s.name})" for s in SWEEP.values()))


def sweep_points(profile: Profile, settings: Sequence[str] | None = None,
                 values: Mapping[str, Sequence] | None = None) -> list[Variant]:
    """One variant per (setting, value), one setting at a time around ``profile`` (the base).

    ``settings``: which of :data:`SWEEP` (default all six); ``values``: setting -> values replacing Table 8's.
    Every point is applied to ``profile`` here, so a value of the wrong type (``"0.8"`` for λ_ID, ``20.0``
    DDIM steps) or out of range is an :class:`OverlayError` naming the setting before anything runs.
    """
    values = dict(values or {})
    chosen = [sweep_setting(s) for s in (settings if settings is not None else list(SWEEP))]
    unknown = sorted(set(values) - {s.key for s in chosen} - {s.name for s in chosen})
    if unknown:
        raise OverlayError(f"values given for {unknown}, which are not among the chosen settings "
                           f"{[s.key for s in chosen]}")
    points = []
    for s in chosen:
        vals = values.get(s.key, values.get(s.name, s.values))
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or not vals:
            raise OverlayError(f"sweep setting {s.key!r}: values must be a non-empty list, got {vals!r}")
        for value in vals:
            point = s.point(value)
            point.apply(profile)
            points.append(point)
    return points


__all__ = ["ABLATIONS", "NO_RETRAIN", "OverlayError", "PENDING_MODEL_SWITCHES", "SWEEP", "SweepSetting",
           "Variant", "ablation", "ablations", "apply_overlay", "flatten", "freeze", "nest", "pending_switches",
           "split_overlay", "sweep_points", "sweep_setting", "thaw"]
