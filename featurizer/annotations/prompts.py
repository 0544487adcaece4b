"""Prompt template lists: featurizer's own (``conf/annotations/prompts/featurizer.yaml``) or Chat-Scene's
``prompts/prompts.py``, read with ``ast`` and never imported or executed.

A prompts mapping is ``{list name: [templates]}`` plus ``ID_format`` (``"<OBJ{:03}>"``). Each
template of a list named in :data:`PLACEHOLDERS` must hold its placeholder exactly once.
"""

from __future__ import annotations

import ast
from pathlib import Path

from featurizer.annotations.match import ID_FORMAT
from featurizer.errors import DataError

# list name -> the placeholder each of its templates holds once (None: no placeholder)
PLACEHOLDERS: dict[str, str | None] = {
    "obj_caption_prompt": None,
    "obj_caption_wid_prompt": "<id>",
    "multi3dref_prompt": '"<description>"',
    "multi3dref_location_prompt": "<description>",
    "region_caption_prompt": "{}",
    "grounding_prompt": '"<description>"',
    "grounding_location_prompt": "<description>",
    "scan2cap_prompt": "<id>",
    "scan2cap_location_prompt": "<loc>",
    "nr3d_caption_prompt": "<id>",
}
DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "conf" / "annotations" / "prompts" / "featurizer.yaml"


def draw(rng, prompts: dict, name: str, value: str) -> str:
    """A random template of list ``name`` (``rng.choice``) with its placeholder (:data:`PLACEHOLDERS`,
    without the quotes some lists put around it) replaced by ``value``."""
    return rng.choice(prompts[name]).replace(PLACEHOLDERS[name].strip('"'), value)


def _literal_strings(node: ast.AST) -> list[str] | None:
    """The strings of a list literal of string constants, else None."""
    if not isinstance(node, ast.List):
        return None
    out = []
    for elt in node.elts:
        if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str)):
            return None
        out.append(elt.value)
    return out


def read_prompts_py(path: str | Path) -> dict[str, list[str] | str]:
    """The prompt lists of a Chat-Scene ``prompts/prompts.py``, parsed with ``ast`` (never run).

    Kept: module-level ``name = [string literals, ...]`` and ``ID_format = "..."``. Any other
    module-level statement is ignored (not executed). Refused with a DataError naming the file and
    line: an assignment to a known list name (or any ``*_prompt`` name) that is not a list of string
    literals, e.g. a comprehension, a concatenation or an f-string, since its value would need running.
    """
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError:
        raise DataError(path, "prompts file not found") from None
    except SyntaxError as e:
        raise DataError(path, f"line {e.lineno}: not valid Python: {e.msg}") from None
    prompts: dict[str, list[str] | str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets, value = [stmt.target], stmt.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name):
                continue
            name = target.id
            if name == "ID_format":
                if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                    raise DataError(path, f"line {stmt.lineno}: ID_format is not a string literal")
                prompts[name] = value.value
                continue
            strings = None if isinstance(stmt, ast.AugAssign) or value is None else _literal_strings(value)
            if strings is not None:
                prompts[name] = strings
            elif name in PLACEHOLDERS or name.endswith("_prompt"):
                raise DataError(path, f"line {stmt.lineno}: {name} is not a list of string literals "
                                      "(featurizer reads prompts without running the file)")
    return prompts


def read_prompts_yaml(path: str | Path) -> dict[str, list[str] | str]:
    """featurizer's prompt lists: a YAML mapping ``name: [templates]`` (plus ``ID_format``)."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "prompts file not found")
    data = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(data, dict):
        raise DataError(path, "prompts YAML must be a mapping of list name -> list of templates")
    for name, value in data.items():
        ok = isinstance(value, str) if name == "ID_format" else (
            isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not ok:
            raise DataError(path, f"{name} must be a list of strings")
    return data


def load_prompts(path: str | Path | None = None, needed: list[str] | None = None) -> dict:
    """Prompt lists from ``path`` (``.py``: Chat-Scene's, parsed; else YAML), default featurizer's.

    needed: list names the builders use; each must be present, non-empty, and every template must
    hold its placeholder exactly once (DataError naming the file, list and entry otherwise).
    """
    path = DEFAULT_PROMPTS if path is None else Path(path)
    prompts = read_prompts_py(path) if path.suffix == ".py" else read_prompts_yaml(path)
    prompts.setdefault("ID_format", ID_FORMAT)
    if prompts["ID_format"] != ID_FORMAT:
        raise DataError(path, f"ID_format is {prompts['ID_format']!r}; the loader parses <OBJ\\d{{3}}>")
    for name in needed or []:
        entries = prompts.get(name)
        if not entries:
            raise DataError(path, f"no prompt list {name!r} (a builder uses it)")
        holder = PLACEHOLDERS.get(name)
        for i, entry in enumerate(entries):
            if holder is not None and entry.count(holder) != 1:
                raise DataError(path, f"{name}[{i}] must hold {holder} exactly once: {entry!r}")
    return prompts
