"""OME-Zarr (OME-NGFF 0.5, Zarr v3) for large sets: one image group per case with its mask in a ``labels`` group.

Layout (spec sections "multiscales" and "labels"):

    export.ome.zarr/                 root group; attributes["alignflow"] lists the cases
      <case>/                        image: ome.multiscales, axes c, y, x; one resolution level
        0                            uint8 [3, H, W]
        labels/                      ome.labels = ["mask"]
          mask/                      label image: ome.multiscales (axes y, x) + ome.image-label
            0                        uint8 [H, W] of consecutive class ids

One level only: the images are the size the segmentation model trains on, so a pyramid would add nothing.
Pixel size is unknown for photographs, so every scale is 1.0 (the spec's value when no physical size applies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alignflow.export.labels import LabelMap

NGFF_VERSION = "0.5"
LABEL_NAME = "mask"
MAX_CHUNK = 1024
# Distinct, readable colours for label ids 1..; 0 (background) is transparent.
_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def _axis(name: str) -> dict[str, str]:
    return {"name": name, "type": "channel" if name == "c" else "space"}


def _multiscales(name: str, axes: str) -> list[dict[str, Any]]:
    scale = {"type": "scale", "scale": [1.0] * len(axes)}
    return [{"name": name, "axes": [_axis(a) for a in axes], "datasets": [{"path": "0", "coordinateTransformations": [scale]}]}]


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(side, MAX_CHUNK) for side in shape)


class OmeZarrWriter:
    def __init__(self, root: Path, labels: LabelMap, name: str):
        import zarr  # imported here: only this format needs it

        self.labels, self.name = labels, name
        self.group = zarr.open_group(str(root), mode="w", zarr_format=3)

    def write_case(self, case: str, image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
        image_chw = np.ascontiguousarray(np.moveaxis(image, -1, 0))
        node = self.group.create_group(case, attributes={"ome": {"version": NGFF_VERSION, "multiscales": _multiscales(case, "cyx")}})
        node.create_array("0", data=image_chw, chunks=_chunks(image_chw.shape), dimension_names=["c", "y", "x"])
        labels = node.create_group("labels", attributes={"ome": {"version": NGFF_VERSION, "labels": [LABEL_NAME]}})
        label = labels.create_group(LABEL_NAME, attributes={"ome": {
            "version": NGFF_VERSION, "multiscales": _multiscales(LABEL_NAME, "yx"), "image-label": self._image_label()}})
        label.create_array("0", data=np.ascontiguousarray(mask), chunks=_chunks(mask.shape), dimension_names=["y", "x"])
        return {"image": f"{case}/0", "mask": f"{case}/labels/{LABEL_NAME}/0"}

    def copy_case(self, case: str, of: dict[str, str], image: np.ndarray, mask: np.ndarray) -> dict[str, str]:
        # Written again, not linked: each case group's metadata carries its own name.
        return self.write_case(case, image, mask)

    def _image_label(self) -> dict[str, Any]:
        colours = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
        colours += [{"label-value": k, "rgba": [*_COLOURS[(k - 1) % len(_COLOURS)], 255]} for k in range(1, len(self.labels.names))]
        properties = [{"label-value": k, "name": name} for k, name in enumerate(self.labels.names)]
        return {"colors": colours, "properties": properties, "source": {"image": "../../"}}

    def finish(self, rows: list[dict[str, Any]]) -> None:
        self.group.attrs["alignflow"] = {"name": self.name, "cases": [row["case"] for row in rows], "labels": self.labels.as_json(),
                                         "manifest": "manifest.json"}
