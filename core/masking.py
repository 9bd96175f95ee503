"""Masking (脱敏) of a result's columns by their fields' grade and kind, before a result
leaves the datasite (white paper 4.2 分类分级, 5.2.4 处理环节/交换环节 脱敏; docs/PRIVACY.md).

A dataset's field has a grade (``GRADES``, L1 least sensitive to L4 most) and a kind
(``KINDS``: what sort of identifier it is, "none" for others). Standard library only: the
server (its domain validates grades and kinds), the compute node (which masks) and the bench
import it.
"""

from __future__ import annotations

#: a field's grade (分级), from least to most sensitive
GRADES = ("L1", "L2", "L3", "L4")
#: a field's kind: the identifier it holds ("none": not an identifier of a person)
KINDS = ("id_number", "phone", "name", "address", "account", "email", "none")
