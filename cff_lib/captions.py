"""Text prompts built from face attributes (paper Sect. 3, "Input taxonomy and encoding" / "Text Encoding").

The paper encodes prompts such as "a young happy woman" with CLIP ViT-B/32, and its directional CLIP loss
(Sect. 3.7) compares a target text against a neutral source text. The synthetic world writes one caption per
image from its ground-truth attributes; the directional loss uses :func:`source_caption` as its source.

>>> caption_from_attributes(25, "happy", "female")
'a 25-year-old happy woman'
>>> caption_from_attributes(80, "angry", "male")
'an 80-year-old angry man'
>>> caption_from_attributes(None, "sad", None)
'a sad face'
"""
from __future__ import annotations

from cff_lib.emotions import emotion_index

GENDERS: tuple[str, ...] = ("female", "male")
"""Gender presentations the captions (and the synthetic world) know."""

_NOUN = {"female": "woman", "male": "man"}
# emotion category -> adjective used in a caption (RAVDESS names the category "disgust")
_ADJECTIVE = {"disgust": "disgusted"}


def check_gender(gender: str, *, argument: str = "gender") -> str:
    """``gender`` if it is "female" or "male"; a ValueError naming ``argument`` otherwise."""
    if gender not in GENDERS:
        raise ValueError(f"{argument}={gender!r} must be one of {', '.join(GENDERS)}")
    return gender


def _article(next_word: str) -> str:
    """"a" or "an" before ``next_word``, by how it is spoken ("an 8-year-old", "an 18-year-old")."""
    head = next_word.split("-")[0]
    if head.isdigit():
        n = int(head)
        # spoken "eight", "eleven", "eighteen", "eighty(-x)"
        vowel = head.startswith("8") or n in (11, 18)
    else:
        vowel = next_word[:1].lower() in "aeiou"
    return "an" if vowel else "a"


def caption_from_attributes(age: float | None = None, emotion: str | None = None,
                            gender: str | None = None) -> str:
    """English description of a face: "a 25-year-old happy woman", "a 70-year-old man", "a sad face".

    ``age`` (years, rounded to an integer) must lie in [0, 120], ``emotion`` must be one of
    ``cff_lib.emotions.EMOTIONS`` and ``gender`` "female" or "male"; any may be None to leave it out.
    """
    words: list[str] = []
    if age is not None:
        try:
            years = float(age)
        except (TypeError, ValueError):
            raise ValueError(f"age={age!r} must be a number of years in [0, 120]") from None
        if not 0.0 <= years <= 120.0:
            raise ValueError(f"age={age!r} must lie in [0, 120] years")
        words.append(f"{int(round(years))}-year-old")
    if emotion is not None:
        emotion_index(emotion, argument="emotion")
        words.append(_ADJECTIVE.get(emotion, emotion))
    if gender is not None:
        words.append(_NOUN[check_gender(gender)])
    elif age is not None and emotion is None:
        words.append("person")
    else:
        words.append("face")
    return f"{_article(words[0])} {' '.join(words)}"


def source_caption(gender: str | None = None) -> str:
    """Neutral source text of the directional CLIP loss: "a face of a woman", "a face of a man", "a face"."""
    if gender is None:
        return "a face"
    return f"a face of a {_NOUN[check_gender(gender)]}"


def caption_variant(rng, age: float, emotion: str, gender: str, emotion_prompt: str,
                    cutoffs: tuple[float, float, float, float] = (0.6, 0.75, 0.85, 0.95)) -> str:
    """One caption of several forms for a face, so a text tower also learns partial descriptions: with one
    uniform draw r of ``rng`` -- r < cutoffs[0]: all three attributes; then the emotion prompt
    (``emotion_prompt.format(emotion)``); age and gender; emotion and gender; else age and emotion."""
    r = rng.random()
    if r < cutoffs[0]:
        return caption_from_attributes(age, emotion, gender)
    if r < cutoffs[1]:
        return emotion_prompt.format(emotion)
    if r < cutoffs[2]:
        return caption_from_attributes(age, None, gender)
    if r < cutoffs[3]:
        return caption_from_attributes(None, emotion, gender)
    return caption_from_attributes(age, emotion, None)
