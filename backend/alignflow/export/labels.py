"""Class ids in an export: consecutive 0..K (nnU-Net requires it), with names, mapped from the ids in the masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alignflow.errors import InputError


@dataclass(frozen=True)
class LabelMap:
    """``source_ids[k]`` is the mask id exported as ``k``; ``names[k]`` its name (``names[0]`` is the background)."""

    source_ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_class_values(cls, class_values: Sequence[int], names: Sequence[str] | None = None) -> LabelMap:
        source_ids = tuple(sorted({int(v) for v in class_values} | {0}))
        if names is None:
            names = ["background", *(f"class_{v}" for v in source_ids[1:])]
        names = [str(n) for n in names]
        if len(names) != len(source_ids):
            raise InputError("labels", f"{len(source_ids)} class names (background first) for the mask ids "
                                       f"{list(source_ids)}", f"{len(names)}: {names}")
        if len(set(names)) != len(names) or not all(names):
            raise InputError("labels", "distinct, non-empty class names", str(names))
        return cls(source_ids, tuple(names))

    @property
    def name_to_id(self) -> dict[str, int]:
        """nnU-Net's ``labels`` form: name -> consecutive id."""
        return {name: k for k, name in enumerate(self.names)}

    @property
    def id_to_name(self) -> dict[str, str]:
        """The Decathlon form: consecutive id (as a string key) -> name."""
        return {str(k): name for k, name in enumerate(self.names)}

    @property
    def is_identity(self) -> bool:
        return self.source_ids == tuple(range(len(self.source_ids)))

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """Mask ids -> consecutive ids through a 256-entry lookup table (masks are uint8)."""
        if self.is_identity:
            return mask
        table = np.zeros(256, dtype=np.uint8)
        table[list(self.source_ids)] = np.arange(len(self.source_ids), dtype=np.uint8)
        return table[mask]

    def as_json(self) -> dict[str, dict[str, int | str]]:
        return {name: {"id": k, "mask_value": self.source_ids[k]} for k, name in enumerate(self.names)}
