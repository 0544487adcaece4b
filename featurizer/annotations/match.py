"""What the builders share: Chat-Scene's box IoU and matching rule, and its caption formats.

Boxes are ``locs`` rows ``(cx, cy, cz, sx, sy, sz)`` of the attribute files (aligned frame).
:func:`iou_matrix` is Chat-Scene's ``utils/box_utils.py`` rule (8 corners at centre +- size / 2, then
their per-axis min and max, ``inter / (vol1 + vol2 - inter + 1e-8)``) for every (pred, GT) pair at
once; :func:`best_pred` is the reference's loop over predictions (strict ``>``, start -1: ties go to
the lowest index and a match always exists).
"""

from __future__ import annotations

import re
import string

import numpy as np

ID_FORMAT = "<OBJ{:03}>"
QA_SUFFIX = " Answer the question using a single word or phrase."


def as_locs(locs) -> np.ndarray:
    """(I, 6) float64 array of a ``locs`` tensor or array (an attribute file's float32 values)."""
    return np.asarray(locs, dtype=np.float32).reshape(-1, 6).astype(np.float64)


def _min_max(locs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = locs[:, 3:6] / 2.0
    a, b = locs[:, :3] + half, locs[:, :3] - half  # the corners' two values per axis
    return np.minimum(a, b), np.maximum(a, b)


def iou_matrix(pred, gt) -> np.ndarray:
    """(P, G) float64 IoU of every ``pred`` (P, 6) row with every ``gt`` (G, 6) row: the reference's
    corner values and operation order, so the reference's loop over pairs gives the same bits."""
    lo_p, hi_p = _min_max(as_locs(pred))
    lo_g, hi_g = _min_max(as_locs(gt))
    d = np.maximum(np.minimum(hi_p[:, None], hi_g[None]) - np.maximum(lo_p[:, None], lo_g[None]), 0.0)
    inter = d[..., 0] * d[..., 1] * d[..., 2]
    ep, eg = hi_p - lo_p, hi_g - lo_g
    vp, vg = ep[:, 0] * ep[:, 1] * ep[:, 2], eg[:, 0] * eg[:, 1] * eg[:, 2]
    return inter / (vp[:, None] + vg[None] - inter + 1e-8)


def best_pred(ious: np.ndarray) -> tuple[int, float]:
    """(pred index, IoU) of the highest of ``ious`` (P,), ties to the lowest index; (-1, -1.0) when
    there is no prediction (the reference's loop never updates then)."""
    if len(ious) == 0:
        return -1, -1.0
    k = int(np.argmax(ious))  # first maximum = the strict-> loop's choice
    return k, float(ious[k])


def obj_token(index: int) -> str:
    return ID_FORMAT.format(int(index))


def strip_punctuation(text: str) -> str:
    """Drop one trailing ``string.punctuation`` character (the grounding prompts' description)."""
    return text[:-1] if text and text[-1] in string.punctuation else text


# a sentence ends with . ! or ? (repeated), optionally closing quotes/brackets, then whitespace
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, split after ``.``/``!``/``?`` followed by whitespace.

    Stands in for ``nltk.sent_tokenize`` (nltk is not a dependency). Differences: no abbreviation
    list, so ``"e.g. the chair"`` splits after ``e.g.``; punkt's learned exceptions (initials,
    ``"mr."``...) are not reproduced. ScanRefer descriptions rarely contain either.
    """
    parts, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        parts.append(text[start:m.start()] + m.group(0).strip())
        start = m.end()
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def capitalize_sentences(text: str) -> str:
    """Each sentence ``str.capitalize()``-d (first letter upper, the rest LOWERED), joined by a space."""
    return " ".join(s.capitalize() for s in split_sentences(text))


def id_answer(items: list[str]) -> str:
    """Multi3DRefer's answer: ``No.``, ``Yes. A.``, ``Yes. A and B.``, ``Yes. A, B, and C.``"""
    if not items:
        return "No."
    if len(items) == 1:
        return f"Yes. {items[0]}."
    if len(items) == 2:
        return f"Yes. {items[0]} and {items[1]}."
    return "Yes. " + ", ".join(items[:-1]) + f", and {items[-1]}."


def loc_token(value: float) -> str:
    """``<LOCddd>`` of ``clamp(int(v * 100) + 500, 0, 999)`` (int truncates toward zero)."""
    return f"<LOC{min(max(int(value * 100) + 500, 0), 999):03}>"


def location_string(loc) -> str:
    """``<LOCATION> cx cy cz sx sy sz </LOCATION>`` of one (6,) ``locs`` row."""
    return "<LOCATION> " + " ".join(loc_token(float(v)) for v in loc[:6]) + " </LOCATION>"
