"""Push's pure steps over the walk's columns: what the walk's cached decisions depend on
(:func:`rules_key`) and the manifest's tree columns (:func:`tree_columns`). No I/O."""

from __future__ import annotations

import os
from array import array
from typing import Any

from snapsync.core.hashing import hasher
from snapsync.core.ignore import IgnoreRules
from snapsync.core.manifest import FILE, SYMLINK, TreeColumns
from snapsync.local.listing import Columns, normal_mode

_FILE, _LINK = ord(FILE), ord(SYMLINK)


def rules_key(rules: Any, exclude: list[str]) -> str:
    """What the walk's decisions depend on besides the names: the rules and exclusions.

    Empty for rules that are not plain ignore rules (``push --git``'s file list): their
    decisions are never reused.
    """
    if not isinstance(rules, IgnoreRules):
        return ""
    h = hasher()
    # Own folders by path: one that appears later inside the tree changes a listing anyway.
    own = sorted(os.path.abspath(p) for p in exclude)
    for part in (rules.source, *rules.patterns, "\0", *own):
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def tree_columns(cols: Columns, nchunks: array[int], ids: bytearray,
                  dropped: set[int]) -> TreeColumns:
    """The manifest's tree columns from the walk's, leaving out ``dropped`` entries.

    The integer columns are arrays (a few bytes an entry, no int object each): the manifest
    is packed from them slice by slice (``core.manifest``), to the same bytes as lists.
    """
    kinds, sigs = cols.kinds, cols.sigs
    keep = [i for i in range(len(cols)) if i not in dropped] if dropped else range(len(cols))
    modes, sizes = array("H"), array("q")
    for i in keep:
        k = kinds[i]
        if k == _FILE:
            modes.append(normal_mode(sigs[5 * i + 4]))
            sizes.append(sigs[5 * i])
        else:
            modes.append(0o777 if k == _LINK else 0o755)
            sizes.append(0)
    targets = cols.targets
    return TreeColumns(
        paths=[cols.paths[i] for i in keep] if dropped else cols.paths,
        kinds=bytes(kinds[i] for i in keep) if dropped else bytes(kinds),
        modes=modes, sizes=sizes,
        nchunks=array("I", (nchunks[i] for i in keep)) if dropped else nchunks,
        ids=bytes(ids), targets=[targets.get(i, b"") for i in keep])
