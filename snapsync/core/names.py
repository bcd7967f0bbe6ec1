"""Ref names: git-like, hierarchical (``feature/x``), safe as parts of store keys.

Pure: no I/O. A ref ``NAME`` lives at ``refs/NAME.json`` and its log under ``logs/NAME/``
(docs/format.md §1), so a name must not climb out of those prefixes, must not collide with a
key the layout itself uses (``.json``), and must stay well below the key limits of the object
stores (1,024 bytes on S3 and GCS). Every refusal says exactly what is wrong.
"""

from __future__ import annotations

import re

from snapsync.errors import UsageError

MAX_REF_LENGTH = 200
MAX_COMPONENT_LENGTH = 128
_COMPONENT_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")


def ref_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a ref name, or ``None`` when it is valid."""
    if not isinstance(name, str) or not name:
        return "a ref name cannot be empty"
    if len(name) > MAX_REF_LENGTH:
        return f"it is {len(name)} characters long; at most {MAX_REF_LENGTH} are allowed"
    if name.startswith("/") or name.endswith("/"):
        return "it cannot start or end with '/'"
    for comp in name.split("/"):
        if not comp:
            return "it has an empty component ('//')"
        if comp in (".", ".."):
            return f"it has a {comp!r} component"
        if ".." in comp:
            return "it cannot contain '..'"
        if comp.startswith("."):
            return f"component {comp!r} starts with '.'"
        if comp.startswith("-"):
            return f"component {comp!r} starts with '-' (it would read as an option)"
        if comp.endswith(".lock"):
            return f"component {comp!r} ends with '.lock'"
        if comp.endswith(".json"):
            return f"component {comp!r} ends with '.json' (the store's ref file suffix)"
        if len(comp) > MAX_COMPONENT_LENGTH:
            return (f"component {comp[:20]!r}... is {len(comp)} characters long; at most "
                    f"{MAX_COMPONENT_LENGTH} are allowed")
        if not _COMPONENT_CHARS.match(comp):
            bad = sorted({c for c in comp if not re.match(r"[A-Za-z0-9._-]", c)})
            return (f"it contains {', '.join(repr(c) for c in bad)}; use letters, digits, "
                    "'.', '_', '-' and '/' between components")
    return None


def check_ref_name(name: str, option: str = "--ref") -> str:
    """Return ``name`` when it is a valid ref name; else raise ``UsageError`` saying why."""
    problem = ref_name_problem(name)
    if problem is not None:
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:40]) + "..."
        raise UsageError(f"invalid ref name {shown} ({option}): {problem}")
    return name
