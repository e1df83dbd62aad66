"""Procedural faces with known identity, age and emotion (the synthetic stand-in for paper "Datasets").

The paper trains and evaluates on FFHQ, CACD2000 (age) and RAVDESS (emotion) and measures Age Accuracy,
Emotion Accuracy and identity similarity (Sect. 4.2). Without the real data, this module draws cartoon faces
whose ground truth is exact:

- identity (:class:`Identity`): head shape, skin tone, eye/nose/mouth geometry, hair colour and style,
  gender presentation, beard, ears, a beauty mark - stable across age and emotion;
- age 16..99: wrinkles (forehead, crow's feet, nasolabial and marionette lines) deepening with age, hair and
  brows greying, skin desaturating and darkening, eye bags, lids drooping, lips thinning, jaw sagging, the
  youthful cheek blush fading, male hairlines receding - each cue monotone in age;
- emotion (the eight RAVDESS categories) with an intensity in [0, 1]: mouth curvature, opening, width and
  teeth, brow height/tilt/arch, eye openness and gaze, nose wrinkles, brow furrow, flush.

:func:`render_face` draws at ``supersample`` times the target size with ``PIL.ImageDraw`` and downsamples
with LANCZOS, so the result is deterministic (same inputs, same bytes) and anti-aliased.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image, ImageDraw

from cff_lib.ages import AGE_MAX, AGE_MIN
from cff_lib.captions import check_gender
from cff_lib.emotions import EMOTIONS, emotion_index, valence_arousal

HAIR_STYLES: tuple[str, ...] = ("short", "long", "fringe", "balding", "curly")
"""Hair styles an identity may wear."""
BEARDS: tuple[str, ...] = ("none", "stubble", "full")
"""Beard kinds (only male-presenting identities have one)."""

RGB = tuple[int, int, int]

# base palettes that identities jitter around
_SKINS: tuple[RGB, ...] = ((250, 222, 200), (238, 200, 170), (222, 180, 140), (198, 150, 110),
                           (160, 112, 78), (118, 80, 56))
_HAIRS: tuple[RGB, ...] = ((25, 20, 20), (70, 45, 30), (120, 80, 45), (170, 125, 70), (225, 195, 120),
                           (165, 70, 35))
_IRISES: tuple[RGB, ...] = ((70, 45, 25), (40, 28, 20), (60, 110, 170), (70, 125, 80), (120, 95, 50),
                            (110, 120, 130))
_GREY_HAIR: RGB = (228, 228, 232)


@dataclass(frozen=True)
class Identity:
    gender: str  # gender presentation, "female" or "male"
    face_width: float  # half-width of the face at the cheekbones, fraction of the canvas (0.21-0.27)
    face_height: float  # eye-line-to-chin distance, fraction of the canvas (0.28-0.33)
    jaw: float  # jaw width relative to the cheeks (0.45 pointed .. 0.85 square)
    skin: RGB  # skin colour at age 16
    eye_spacing: float  # eye centre distance from the midline, fraction of face_width (0.33-0.47)
    eye_size: float  # eye width multiplier (0.8-1.25)
    eye_level: float  # eye-line shift, fraction of face_height (-0.05 up .. 0.05 down)
    iris: RGB  # iris colour
    brow_thickness: float  # eyebrow stroke multiplier (0.85-1.45)
    nose_length: float  # nose tip below the eye line, fraction of face_height (0.28-0.44)
    nose_width: float  # nostril half-width, fraction of face_width (0.13-0.24)
    mouth_width: float  # mouth half-width at rest, fraction of face_width (0.26-0.38)
    lip_fullness: float  # lip thickness multiplier (0.6-1.4)
    lip_color: RGB  # lip colour at age 16
    hair: RGB  # hair colour before greying
    hair_style: str  # one of HAIR_STYLES
    hairline: float  # hairline height above the eye line, fraction of face_height (0.55-0.75)
    beard: str  # one of BEARDS; "none" for every female-presenting identity
    ear_size: float  # ear size multiplier (0.8-1.2)
    blush: float  # cheek redness at 16, fading by about 55 (0-1)
    mole: tuple[float, float] | None  # beauty mark position in face units (x, y in [-0.7, 0.7]) or None

    def __post_init__(self) -> None:
        check_gender(self.gender, argument="gender")
        if self.hair_style not in HAIR_STYLES:
            raise ValueError(f"hair_style={self.hair_style!r} must be one of {', '.join(HAIR_STYLES)}")
        if self.beard not in BEARDS:
            raise ValueError(f"beard={self.beard!r} must be one of {', '.join(BEARDS)}")
        if self.gender == "female" and self.beard != "none":
            raise ValueError(f"beard={self.beard!r} needs gender='male'")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple) and f.name != "mole" and not all(0 <= c <= 255 for c in v):
                raise ValueError(f"{f.name}={v} must be an RGB triple in [0, 255]")


@dataclass(frozen=True)
class FaceAttributes:
    identity: Identity  # who is drawn
    age: float  # years, in [AGE_MIN, AGE_MAX]
    emotion: str  # one of cff_lib.emotions.EMOTIONS
    intensity: float = 1.0  # expression strength in [0, 1]; 0 draws a neutral face

    def __post_init__(self) -> None:
        if not isinstance(self.identity, Identity):
            raise ValueError(f"identity={self.identity!r} must be an Identity")
        if not AGE_MIN <= float(self.age) <= AGE_MAX:
            raise ValueError(f"age={self.age} must lie in [{AGE_MIN:g}, {AGE_MAX:g}] years")
        emotion_index(self.emotion, argument="emotion")
        if not 0.0 <= float(self.intensity) <= 1.0:
            raise ValueError(f"intensity={self.intensity} must lie in [0, 1]")

    @property
    def valence(self) -> float:
        return valence_arousal(self.emotion, self.intensity)[0]

    @property
    def arousal(self) -> float:
        return valence_arousal(self.emotion, self.intensity)[1]


def _jitter(rng: np.random.Generator, base: RGB, spread: float) -> RGB:
    return tuple(int(np.clip(c + rng.normal(0.0, spread), 0, 255)) for c in base)  # type: ignore[return-value]


def sample_identity(rng: np.random.Generator, gender: str | None = None) -> Identity:
    """A random identity; ``gender`` ("female"/"male") is drawn 50/50 when None."""
    if gender is None:
        gender = "female" if rng.random() < 0.5 else "male"
    check_gender(gender)
    female = gender == "female"
    u = rng.uniform
    if female:
        style = str(rng.choice(HAIR_STYLES, p=[0.15, 0.45, 0.22, 0.0, 0.18]))
        beard = "none"
        lip = _jitter(rng, (196, 82, 98), 14.0)
    else:
        style = str(rng.choice(HAIR_STYLES, p=[0.42, 0.08, 0.15, 0.18, 0.17]))
        beard = str(rng.choice(BEARDS, p=[0.6, 0.2, 0.2]))
        lip = (0, 0, 0)  # replaced below by a skin-derived colour
    skin = _jitter(rng, _SKINS[int(rng.integers(len(_SKINS)))], 7.0)
    if not female:
        lip = tuple(int(c) for c in np.clip(np.array(skin) * [0.86, 0.62, 0.62] + [10, 0, 0], 0, 255))
    mole = (float(u(-0.6, 0.6)), float(u(-0.2, 0.6))) if rng.random() < 0.35 else None
    return Identity(
        gender=gender,
        face_width=float(u(0.23, 0.27) if female else u(0.245, 0.29)),
        face_height=float(u(0.3, 0.33) if female else u(0.31, 0.35)),
        jaw=float(u(0.45, 0.7) if female else u(0.6, 0.88)),
        skin=skin,
        eye_spacing=float(u(0.33, 0.47)),
        eye_size=float(u(0.85, 1.25) if female else u(0.8, 1.15)),
        eye_level=float(u(-0.05, 0.05)),
        iris=_jitter(rng, _IRISES[int(rng.integers(len(_IRISES)))], 8.0),
        brow_thickness=float(u(0.85, 1.15) if female else u(1.0, 1.45)),
        nose_length=float(u(0.28, 0.44)),
        nose_width=float(u(0.13, 0.2) if female else u(0.16, 0.24)),
        mouth_width=float(u(0.26, 0.38)),
        lip_fullness=float(u(0.9, 1.4) if female else u(0.6, 1.05)),
        lip_color=lip,  # type: ignore[arg-type]
        hair=_jitter(rng, _HAIRS[int(rng.integers(len(_HAIRS)))], 10.0),
        hair_style=style,
        hairline=float(u(0.55, 0.75)),
        beard=beard,
        ear_size=float(u(0.8, 1.2)),
        blush=float(u(0.3, 1.0) if female else u(0.0, 0.6)),
        mole=mole,
    )


# --------------------------------------------------------------------------------------------- expression
@dataclass(frozen=True)
class _Expression:
    smile: float = 0.0  # mouth-corner lift (+ up, - down), units of 0.13 face heights
    open: float = 0.0  # jaw drop, units of 0.24 face heights
    width: float = 1.0  # mouth width multiplier
    teeth: float = 0.0  # share of the mouth opening filled by teeth
    press: float = 0.0  # lips pressed thin (0-1)
    brow_raise: float = 0.0  # brow lift, units of 0.11 face heights (+ up)
    brow_tilt: float = 0.0  # inner brow ends lifted (+, sad/fearful) or pulled down (-, angry V)
    brow_arch: float = 0.0  # brow midpoint lift (surprise arch)
    eye_open: float = 1.0  # eye-opening multiplier
    lids: float = 0.0  # heavy relaxed upper lids (calm)
    gaze: float = 0.0  # iris shift down (+), units of the eye half-height
    snarl: float = 0.0  # one-sided upper-lip raise (disgust)
    nose_wrinkle: float = 0.0  # wrinkles across the nose bridge (disgust)
    furrow: float = 0.0  # vertical lines between the brows (anger)
    flush: float = 0.0  # reddening of the skin (anger)
    cheeks: float = 0.0  # raised cheeks under the eyes (smile)


_EXPRESSIONS: dict[str, _Expression] = {
    "neutral": _Expression(),
    "calm": _Expression(smile=0.6, width=1.1, eye_open=0.28, lids=1.0, brow_raise=-0.3),
    "happy": _Expression(smile=1.15, open=0.5, width=1.3, teeth=0.7, brow_raise=0.2, eye_open=0.7,
                         cheeks=1.0),
    "sad": _Expression(smile=-1.35, width=0.85, press=0.3, brow_raise=0.2, brow_tilt=1.7, eye_open=0.68,
                       gaze=0.6),
    "angry": _Expression(smile=-0.35, width=0.78, press=1.0, brow_raise=-0.9, brow_tilt=-1.4, eye_open=0.78,
                         furrow=1.0, flush=1.0),
    "fearful": _Expression(smile=-0.35, open=0.42, width=1.28, teeth=0.55, brow_raise=1.0, brow_tilt=0.9,
                           eye_open=1.55),
    "disgust": _Expression(smile=-0.55, open=0.08, snarl=1.0, teeth=0.8, brow_raise=-0.55, brow_tilt=-0.5,
                           eye_open=0.6, nose_wrinkle=1.0),
    "surprised": _Expression(open=1.0, width=0.62, brow_raise=1.45, brow_arch=1.0, eye_open=1.6),
}
assert set(_EXPRESSIONS) == set(EMOTIONS)


def _expression(emotion: str, intensity: float) -> _Expression:
    """The emotion's expression blended from neutral; eased so intensity 0.5 already reads strongly."""
    k = 1.0 - (1.0 - intensity) ** 2
    full, rest = _EXPRESSIONS[emotion], _EXPRESSIONS["neutral"]
    return _Expression(**{f.name: getattr(rest, f.name) + k * (getattr(full, f.name) - getattr(rest, f.name))
                          for f in fields(_Expression)})


# --------------------------------------------------------------------------------------------------- age
def _ramp(age: float, start: float, end: float) -> float:
    """0 before ``start``, 1 after ``end``, linear between."""
    return min(1.0, max(0.0, (age - start) / (end - start)))


@dataclass(frozen=True)
class _AgeCues:
    t: float  # overall age progress, 0 at 16 and 1 at 99
    forehead: tuple[float, float, float]  # strength of the three forehead lines
    crows: float  # crow's-feet strength
    bags: float  # eye-bag strength
    nasolabial: float  # nose-to-mouth fold strength
    marionette: float  # mouth-corner-to-chin line strength
    neck: float  # neck-line strength
    grey: float  # hair greying, 0 original to 1 white
    brow_grey: float  # eyebrow greying
    sag: float  # jowl/jaw sagging
    youth: float  # youthful blush and fullness, 1 at 16 fading to 0 by 56
    recede: float  # male hairline recession


def _age_cues(age: float) -> _AgeCues:
    return _AgeCues(
        t=_ramp(age, AGE_MIN, AGE_MAX),
        forehead=(_ramp(age, 20, 62), _ramp(age, 30, 75), _ramp(age, 42, 90)),
        crows=_ramp(age, 28, 80),
        bags=_ramp(age, 24, 88),
        nasolabial=_ramp(age, 18, 75),
        marionette=_ramp(age, 42, 95),
        neck=_ramp(age, 40, 90),
        grey=_ramp(age, 28, 88) ** 1.1,
        brow_grey=_ramp(age, 50, 99),
        sag=_ramp(age, 38, 99),
        youth=1.0 - _ramp(age, 16, 56),
        recede=_ramp(age, 25, 85),
    )


# ------------------------------------------------------------------------------------------------ drawing
def _mix(a, b, t: float) -> RGB:
    """Colour ``a`` moved a fraction ``t`` toward ``b``."""
    t = min(1.0, max(0.0, t))
    return (int(round(a[0] + (b[0] - a[0]) * t)), int(round(a[1] + (b[1] - a[1]) * t)),
            int(round(a[2] + (b[2] - a[2]) * t)))


def _scale(a, f: float) -> RGB:
    return (min(255, int(a[0] * f)), min(255, int(a[1] * f)), min(255, int(a[2] * f)))


def _aged_skin(skin: RGB, age: _AgeCues, flush: float) -> RGB:
    grey = sum(skin) / 3.0
    s = _mix(skin, (grey, grey, grey * 0.92), 0.4 * age.t)
    s = _scale(s, 1.0 - 0.1 * age.t)
    return _mix(s, (215, 70, 60), 0.2 * flush)


def _face_outline(cx, cy, fw, fh, jaw, sag, jaw_drop, n=40):
    """Head outline: elliptic cranium on top, a jaw tapering to ``jaw`` below, sagging with age."""
    top, bottom = 1.1 * fh, fh * (1.0 + 0.035 * sag + 0.16 * jaw_drop)
    jaw_eff = min(0.95, jaw + 0.13 * sag)
    pts = []
    for i in range(n):
        th = 2.0 * math.pi * i / n
        s, c = math.sin(th), math.cos(th)
        if c >= 0:  # cranium
            pts.append((cx + fw * s, cy - top * c))
        else:
            d = -c
            width = fw * (1.0 - (1.0 - jaw_eff) * d ** 1.6) * (1.0 + 0.05 * sag * d)
            pts.append((cx + width * s, cy + bottom * d))
    return pts


def _curve(p0, p1, p2, n=8):
    """Quadratic Bezier from p0 to p2 pulled toward p1."""
    out = []
    for i in range(n + 1):
        t = i / n
        a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t * t
        out.append((a * p0[0] + b * p1[0] + c * p2[0], a * p0[1] + b * p1[1] + c * p2[1]))
    return out


def _polyline(d: ImageDraw.ImageDraw, pts, color, width: float) -> None:
    d.line(pts, fill=color, width=max(1, int(round(width))), joint="curve")


def render_face(attrs: FaceAttributes, size: int = 64, *, variation_seed: int | None = None,
                supersample: int = 4) -> Image.Image:
    """Draw ``attrs`` as an RGB ``size`` x ``size`` image.

    ``variation_seed=None`` gives the clean render (plain background, grey-blue top, centred). An integer adds
    mild per-image variation from that seed: background colour, clothing colour, a small shift and scale,
    and a slight brightness change. Either way the same arguments give the same pixels.
    """
    if not isinstance(attrs, FaceAttributes):
        raise ValueError(f"attrs={attrs!r} must be a FaceAttributes")
    if not 8 <= int(size) <= 2048:
        raise ValueError(f"size={size} must lie in [8, 2048]")
    if not 1 <= int(supersample) <= 8:
        raise ValueError(f"supersample={supersample} must lie in [1, 8]")
    S = int(size) * int(supersample)
    idn = attrs.identity
    ex, ag = _expression(attrs.emotion, float(attrs.intensity)), _age_cues(float(attrs.age))

    background, clothes, dx, dy, zoom, light = (205, 212, 220), (70, 90, 120), 0.0, 0.0, 1.0, 1.0
    if variation_seed is not None:
        vr = np.random.default_rng(np.random.SeedSequence([int(variation_seed), 0xFACE]))
        background = _jitter(vr, (205, 212, 220), 14.0)
        clothes = tuple(int(c) for c in vr.integers(30, 200, size=3))  # type: ignore[assignment]
        dx, dy = (float(v) for v in vr.uniform(-0.025, 0.025, size=2))
        zoom, light = float(vr.uniform(0.96, 1.04)), float(vr.uniform(0.94, 1.06))

    fw, fh = idn.face_width * S * zoom, idn.face_height * S * zoom
    cx, cy = (0.5 + dx) * S, (0.46 + dy) * S
    lw = S / 110.0  # base stroke width
    skin = _aged_skin(idn.skin, ag, ex.flush)
    shade = _scale(skin, 0.8)
    line = _scale(skin, 0.42)
    hair = _mix(idn.hair, _GREY_HAIR, ag.grey)
    brow_col = _mix(_mix(_scale(idn.hair, 0.5), _scale(skin, 0.3), 0.3), _GREY_HAIR, 0.85 * ag.brow_grey)

    img = Image.new("RGB", (S, S), background)
    d = ImageDraw.Draw(img)

    # shoulders and clothes
    d.ellipse([cx - 2.1 * fw, cy + 1.25 * fh, cx + 2.1 * fw, cy + 2.6 * fh], fill=clothes)
    # hair behind the head
    style = idn.hair_style
    if style == "long":
        d.rounded_rectangle([cx - 1.28 * fw, cy - 1.3 * fh, cx + 1.28 * fw, cy + 1.45 * fh],
                            radius=1.1 * fw, fill=hair)
    elif style == "curly":
        r = 0.3 * fw
        for i in range(15):
            a = math.radians(-125 + 250 * i / 14)
            x, y = cx + 1.06 * fw * math.sin(a), cy - 1.2 * fh * math.cos(a)
            d.ellipse([x - r, y - r, x + r, y + r], fill=hair)
    # neck
    d.rectangle([cx - 0.42 * fw, cy + 0.55 * fh, cx + 0.42 * fw, cy + 1.45 * fh], fill=shade)
    d.ellipse([cx - 0.42 * fw, cy + 1.2 * fh, cx + 0.42 * fw, cy + 1.6 * fh], fill=shade)
    for k in range(2):
        yk = cy + (1.05 + 0.15 * k) * fh
        _polyline(d, _curve((cx - 0.32 * fw, yk), (cx, yk + 0.07 * fh), (cx + 0.32 * fw, yk)),
                  _mix(shade, line, 0.8 * ag.neck), 1.3 * lw)
    # ears
    ey = cy + idn.eye_level * fh
    ea, eb = 0.15 * fw * idn.ear_size, 0.25 * fh * idn.ear_size
    for sgn in (-1, 1):
        x = cx + sgn * 0.96 * fw
        d.ellipse([x - ea, ey - 0.2 * eb, x + ea, ey + 1.6 * eb], fill=shade)
    # face
    d.polygon(_face_outline(cx, cy, fw, fh, idn.jaw, ag.sag, 0.5 * ex.open), fill=skin)
    # cheek blush (youth) and mole
    if idn.blush * ag.youth > 0.01:
        bc = _mix(skin, (235, 100, 110), 0.35 * idn.blush * ag.youth)
        for sgn in (-1, 1):
            x, y = cx + sgn * 0.56 * fw, cy + 0.3 * fh
            d.ellipse([x - 0.2 * fw, y - 0.12 * fh, x + 0.2 * fw, y + 0.12 * fh], fill=bc)
    if idn.mole is not None:
        x, y, r = cx + idn.mole[0] * fw, cy + idn.mole[1] * fh, 0.035 * fw
        d.ellipse([x - r, y - r, x + r, y + r], fill=_scale(skin, 0.35))

    # age lines: forehead, nasolabial, marionette
    for k, st in enumerate(ag.forehead):
        if st > 0:
            y = ey - (0.5 + 0.1 * k) * fh
            w = (0.5 - 0.06 * k) * fw
            _polyline(d, _curve((cx - w, y + 0.03 * fh), (cx, y - 0.05 * fh), (cx + w, y + 0.03 * fh)),
                      _mix(skin, line, 0.95 * st), 1.6 * lw)
    nose_y = ey + idn.nose_length * fh
    mouth_y = ey + (idn.nose_length + 0.24) * fh
    mw = idn.mouth_width * fw * ex.width
    corner_y = mouth_y - ex.smile * 0.13 * fh
    nw = idn.nose_width * fw
    if ag.nasolabial > 0:
        for sgn in (-1, 1):
            p0 = (cx + sgn * (nw + 0.06 * fw), nose_y - 0.06 * fh)
            p2 = (cx + sgn * (mw + 0.08 * fw), corner_y + 0.08 * fh)
            p1 = (cx + sgn * (mw + 0.16 * fw), (p0[1] + p2[1]) / 2)
            _polyline(d, _curve(p0, p1, p2), _mix(skin, line, 0.9 * ag.nasolabial), 1.6 * lw)
    if ag.marionette > 0:
        for sgn in (-1, 1):
            x = cx + sgn * (mw + 0.02 * fw)
            _polyline(d, [(x, corner_y + 0.06 * fh), (x + sgn * 0.05 * fw, corner_y + 0.3 * fh)],
                      _mix(skin, line, 0.9 * ag.marionette), 1.6 * lw)
    # anger furrow and disgust nose wrinkles
    if ex.furrow > 0.02:
        for sgn in (-1, 1):
            x = cx + sgn * 0.06 * fw
            _polyline(d, [(x, ey - 0.42 * fh), (x - sgn * 0.015 * fw, ey - 0.22 * fh)],
                      _mix(skin, line, ex.furrow), 1.8 * lw)
    if ex.nose_wrinkle > 0.02:
        for k in range(3):
            y = ey + (0.02 + 0.07 * k) * fh
            _polyline(d, _curve((cx - 0.16 * fw, y + 0.02 * fh), (cx, y - 0.03 * fh),
                                (cx + 0.16 * fw, y + 0.02 * fh)),
                      _mix(skin, line, ex.nose_wrinkle), 1.6 * lw)

    # eyes
    ew = 0.2 * fw * idn.eye_size
    eh = 0.56 * ew * ex.eye_open * (1.0 - 0.14 * ag.t)
    ir = 0.62 * ew
    lid_col = _scale(skin, 0.3)
    for sgn in (-1, 1):
        x = cx + sgn * idn.eye_spacing * fw
        # bags below the eye
        if ag.bags > 0:
            by = ey + eh + 0.05 * fh
            _polyline(d, _curve((x - 0.85 * ew, by - 0.02 * fh), (x, by + 0.09 * fh * (0.5 + ag.bags)),
                                (x + 0.85 * ew, by - 0.02 * fh)), _mix(skin, line, 0.85 * ag.bags), 1.5 * lw)
        if ex.cheeks > 0.02:
            cyk = ey + eh + 0.07 * fh
            _polyline(d, _curve((x - 0.9 * ew, cyk + 0.05 * fh), (x, cyk - 0.04 * fh),
                                (x + 0.9 * ew, cyk + 0.05 * fh)),
                      _mix(skin, shade, ex.cheeks), 1.8 * lw)
        # crow's feet at the outer corner
        if ag.crows > 0:
            ox = x + sgn * 1.12 * ew
            c = _mix(skin, line, 0.9 * ag.crows)
            for a in (-0.35, 0.0, 0.35):
                y0 = ey + a * 0.3 * eh
                _polyline(d, [(ox, y0), (ox + sgn * 0.13 * fw, y0 + a * 0.12 * fh)],
                          c, 1.3 * lw)
        d.ellipse([x - ew, ey - eh, x + ew, ey + eh], fill=(244, 242, 236))
        gy = ey + ex.gaze * eh
        ih = min(ir, eh * 0.98)
        d.ellipse([x - ir, gy - ih, x + ir, gy + ih], fill=idn.iris)
        pr, ph = 0.45 * ir, min(0.45 * ir, eh * 0.7)
        d.ellipse([x - pr, gy - ph, x + pr, gy + ph], fill=(15, 12, 12))
        # upper lid: heavier when relaxed (calm) and with age
        lid_h = eh * (0.35 * ex.lids + 0.1 * ag.t)
        if lid_h > 0.5:
            d.chord([x - ew, ey - eh, x + ew, ey + eh + 2 * lid_h], 180, 360, fill=skin)
        _polyline(d, [(x - ew, ey)] + [(x + ew * math.cos(math.pi - math.pi * i / 8),
                                        ey - (eh - 2 * lid_h) * math.sin(math.pi * i / 8) - lid_h * 0)
                                       for i in range(1, 8)] + [(x + ew, ey)], lid_col, 1.8 * lw)
        d.ellipse([x - ew, ey - eh, x + ew, ey + eh], outline=lid_col, width=max(1, int(0.9 * lw)))

    # brows
    bt = 0.085 * fh * idn.brow_thickness
    base = ey - 0.56 * ew - 0.17 * fh - ex.brow_raise * 0.11 * fh
    for sgn in (-1, 1):
        x = cx + sgn * idn.eye_spacing * fw
        inner = (x - sgn * 1.05 * ew, base - ex.brow_tilt * 0.075 * fh)
        outer = (x + sgn * 1.25 * ew, base + 0.03 * fh + ex.brow_tilt * 0.03 * fh)
        mid = (x + sgn * 0.1 * ew, base - 0.06 * fh - ex.brow_arch * 0.09 * fh + ex.brow_tilt * 0.0)
        _polyline(d, _curve(inner, mid, outer, 6), brow_col, bt)

    # nose
    _polyline(d, _curve((cx + 0.05 * fw, ey + 0.05 * fh), (cx + 0.1 * fw, nose_y - 0.1 * fh),
                        (cx + 0.03 * fw, nose_y), 4), shade, 1.3 * lw)
    _polyline(d, _curve((cx - nw, nose_y - 0.04 * fh), (cx - 0.5 * nw, nose_y + 0.06 * fh),
                        (cx, nose_y + 0.02 * fh), 4), _scale(skin, 0.55), 2.0 * lw)
    _polyline(d, _curve((cx + nw, nose_y - 0.04 * fh), (cx + 0.5 * nw, nose_y + 0.06 * fh),
                        (cx, nose_y + 0.02 * fh), 4), _scale(skin, 0.55), 2.0 * lw)

    # beard (under the mouth, over the lower face)
    if idn.beard != "none":
        bcol = hair if idn.beard == "full" else _mix(skin, hair, 0.4)
        outline = _face_outline(cx, cy, fw, fh, idn.jaw, ag.sag, 0.5 * ex.open)
        cut = nose_y + 0.08 * fh
        pts = [p for p in outline if p[1] > cut]
        d.polygon(pts + [(cx - 0.5 * fw, cut), (cx, cut + 0.05 * fh), (cx + 0.5 * fw, cut)], fill=bcol)

    # mouth
    lip = _mix(_mix(idn.lip_color, skin, 0.45 * ag.t), (150, 60, 60), 0.0)
    thick = 0.07 * fh * idn.lip_fullness * (1.0 - 0.45 * ag.t) * (1.0 - 0.65 * ex.press)
    jaw_open = ex.open * 0.24 * fh
    n = 12
    upper, lower, mid_line = [], [], []
    for i in range(n + 1):
        u = -1.0 + 2.0 * i / n
        x = cx + u * mw
        bow = math.sqrt(max(0.0, 1.0 - u * u))
        yc = mouth_y - ex.smile * 0.13 * fh * u * u
        snarl = ex.snarl * 0.12 * fh * max(0.0, u) ** 0.7 * bow ** 0.3
        yu = yc - 0.25 * jaw_open * bow - snarl
        yl = yc + jaw_open * bow
        upper.append((x, yu))
        lower.append((x, yl))
        mid_line.append((x, yc))
    upper_lip = upper + [(x, y - thick * math.sqrt(max(0.0, 1 - ((x - cx) / mw) ** 2)) ** 0.6)
                         for x, y in reversed(upper)]
    lower_lip = lower + [(x, y + 1.2 * thick * math.sqrt(max(0.0, 1 - ((x - cx) / mw) ** 2)))
                         for x, y in reversed(lower)]
    d.polygon(lower_lip, fill=lip)
    d.polygon(upper_lip, fill=lip)
    gap = max(yl - yu for (_, yu), (_, yl) in zip(upper, lower, strict=True))
    if gap > 0.6 * lw:
        d.polygon(upper + list(reversed(lower)), fill=(75, 22, 30))
        if ex.teeth > 0.02:
            teeth = [(x, yu + min(yl - yu, ex.teeth * 0.16 * fh))
                     for (x, yu), (_, yl) in zip(upper, lower, strict=True)]
            d.polygon(upper + list(reversed(teeth)), fill=(246, 244, 236))
    _polyline(d, mid_line if gap <= 0.6 * lw else upper, _scale(lip, 0.55), 1.6 * lw)

    # hair in front: cap with a hairline, a fringe, or side tufts when balding
    recede = 0.22 * ag.recede if idn.gender == "male" else 0.0
    top = 1.1 * fh + 0.09 * fh + (0.05 * fh if style == "curly" else 0.0)
    cap_w = 1.07 * fw
    outer = []
    for i in range(21):
        a = math.radians(-100 + 200 * i / 20)
        outer.append((cx + cap_w * math.sin(a), cy - top * math.cos(a)))
    if style == "balding":
        line_c = ey - (idn.hairline + 0.3 + recede) * fh
        side = ey - 0.25 * fh
        for sgn in (-1, 1):
            pts = [(cx + sgn * cap_w * math.sin(math.radians(a)), cy - top * math.cos(math.radians(a)))
                   for a in range(100, 55, -5)]
            pts += [(cx + sgn * 0.88 * fw, line_c + 0.25 * fh), (cx + sgn * 0.9 * fw, side)]
            d.polygon(pts, fill=hair)
    else:
        if style == "fringe":
            hl = [(cx + u * 0.98 * fw, ey - (0.42 - 0.15 * abs(u) ** 3) * fh) for u in np.linspace(1, -1, 9)]
        else:
            hc = idn.hairline + recede
            hl = []
            for u in np.linspace(1, -1, 11):
                m_shape = recede * 0.6 * fh * math.exp(-((abs(u) - 0.6) / 0.22) ** 2)
                part = (0.08 * fh * math.exp(-((u - 0.3) / 0.15) ** 2)) if style == "long" else 0.0
                hl.append((cx + u * 0.98 * fw,
                           ey - (hc * (1 - abs(u) ** 4) + 0.22 * abs(u) ** 4) * fh - m_shape - part))
        d.polygon(outer + hl, fill=hair)
        if style == "curly":
            r = 0.12 * fw
            for x, y in hl[1:-1]:
                d.ellipse([x - r, y - r, x + r, y + r], fill=hair)

    if light != 1.0:
        img = img.point(lambda v: min(255, int(v * light)))
    if supersample > 1:
        img = img.resize((int(size), int(size)), Image.LANCZOS)
    return img
