"""The Kermany et al. (2018) pediatric pneumonia folders: ``root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

Labels ``Pneumonia``, ``Bacterial Pneumonia``, ``Viral Pneumonia`` come from the folder and the file
name (``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg``; ``IM-0115-0001.jpeg`` is normal); the
patient id from the name too (``person1``, ``IM-0115``). The published split is kept in ``split``.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd

from .files import IMAGE_EXTENSIONS, NO_SKIPS, DataError, OnError, check_on_error, root_dir, show_path, skips_table

# --- Kermany pediatric pneumonia ------------------------------------------------------------------
KERMANY_SPLITS = ("train", "val", "test")


KERMANY_CLASSES = ("NORMAL", "PNEUMONIA")


_PERSON = re.compile(r"(person\d+)", re.IGNORECASE)


_NORMAL_ID = re.compile(r"((?:NORMAL2-)?IM-\d+)", re.IGNORECASE)


def parse_kermany_name(name: str, folder: str) -> tuple[str, str]:
    """``(patient_id, kind)`` from a Kermany file name; kind is normal / bacteria / virus.

    ``person1_bacteria_1.jpeg`` -> (person1, bacteria); ``person1_virus_6.jpeg`` -> (person1, virus);
    ``IM-0115-0001.jpeg`` / ``NORMAL2-IM-0771-0001.jpeg`` -> (IM-0115 / NORMAL2-IM-0771, normal).
    Raises ValueError saying what was expected."""
    low = name.lower()
    kind = "bacteria" if "bacteria" in low else "virus" if "virus" in low else "normal"
    if folder == "NORMAL" and kind != "normal":
        raise ValueError(f"file name says {kind!r} but the file is in NORMAL/")
    if folder == "PNEUMONIA" and kind == "normal":
        raise ValueError("cannot tell bacterial from viral: expected a name like person1_bacteria_1.jpeg or person1_virus_6.jpeg")
    m = _PERSON.search(name) if kind != "normal" else _NORMAL_ID.search(name)
    if m is None:
        raise ValueError("cannot parse a patient id: expected personN_... (PNEUMONIA) or IM-NNNN-NNNN (NORMAL)")
    return m.group(1), kind


def kermany_meta(root, *, on_error: OnError = "raise") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kermany et al. (2018) pediatric chest X-rays in the published layout
    ``root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` (``val`` may be absent, as in the Mendeley
    release). ``split`` holds the published split. Files with other extensions are not images and are
    listed in the skipped rows (always, with their count)."""
    check_on_error(on_error)
    root = root_dir(root, "Kermany")
    expected = "expected subfolders train/, val/, test/ each holding NORMAL/ and PNEUMONIA/ (Kermany et al. 2018 layout)"
    splits = [s for s in KERMANY_SPLITS if (root / s).is_dir()]
    if not splits:
        found = sorted(show_path(p.name) for p in root.iterdir())[:8]
        nested = [p.name for p in root.iterdir() if p.is_dir() and any((p / s).is_dir() for s in KERMANY_SPLITS)]
        hint = f"; did you mean root={show_path(root / nested[0])!r}?" if nested else ""
        raise DataError(f"Kermany root {show_path(root)!r}: {expected}; found {found or 'an empty folder'}{hint}")
    rows, skipped = [], []
    for s in splits:
        for cls in KERMANY_CLASSES:
            d = root / s / cls
            if not d.is_dir():
                raise DataError(f"Kermany folder {show_path(root / s)!r} lacks {cls}/; {expected}")
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                rel = f"{s}/{cls}/{entry.name}"
                if not entry.is_file():
                    continue
                if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append((show_path(rel), entry.path, f"not an image file name (expected {'/'.join(IMAGE_EXTENSIONS)})"))
                    continue
                try:
                    pid, kind = parse_kermany_name(entry.name, cls)
                except ValueError as e:
                    if on_error == "raise":
                        raise DataError(f"{show_path(entry.path)}: {e}") from None
                    skipped.append((show_path(rel), entry.path, str(e)))
                    continue
                rows.append((show_path(rel), entry.path, pid, s, kind))
    if not rows:
        raise DataError(f"Kermany root {show_path(root)!r} holds no .jpeg/.jpg/.png images in {', '.join(s + '/{NORMAL,PNEUMONIA}' for s in splits)}")
    df = pd.DataFrame(rows, columns=["image_id", "path", "patient_id", "split", "kind"])
    meta = pd.DataFrame(
        {
            "image_id": df["image_id"],
            "patient_id": df["patient_id"],
            "study": "",
            "site": "kermany",
            "view": "",
            "sex": None,
            "age": np.nan,
            "Pneumonia": (df["kind"] != "normal").astype(np.float64),
            "Bacterial Pneumonia": (df["kind"] == "bacteria").astype(np.float64),
            "Viral Pneumonia": (df["kind"] == "virus").astype(np.float64),
            "kind": df["kind"],
            "split": df["split"],
            "path": df["path"],
        }
    )
    return meta, skips_table(*zip(*skipped)) if skipped else NO_SKIPS
