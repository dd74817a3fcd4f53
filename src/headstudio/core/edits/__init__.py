"""Edits are data: each kind validates, previews, applies and reverts itself; a recipe is a list of them.

Importing this package imports every kind, which registers it for ``edit_from_json``.
"""

from headstudio.core.edits.add_head import AddHead, MultiHead
from headstudio.core.edits.attach_head import AddHeadFromFile, ReplaceHeadFromFile, head_fit
from headstudio.core.edits.base import Edit, Preview, edit_from_json
from headstudio.core.edits.cut import CutAfter
from headstudio.core.edits.remove_layers import RemoveLayers
from headstudio.core.edits.replace import RemoveHead, ReplaceHead
from headstudio.core.edits.trainable import FreezeBackbone, SetTrainable

__all__ = [
    "AddHead",
    "AddHeadFromFile",
    "CutAfter",
    "Edit",
    "FreezeBackbone",
    "MultiHead",
    "Preview",
    "RemoveHead",
    "RemoveLayers",
    "ReplaceHead",
    "ReplaceHeadFromFile",
    "SetTrainable",
    "edit_from_json",
    "head_fit",
]
