"""What a version folder is, whatever stores it: a numeric name, and a model file inside."""
from __future__ import annotations

from typing import Optional

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")  # a SavedModel folder holds one of these
MODEL_FILES = (*SAVED_MODEL_FILES, "model.tflite")


def parse_version(name: str) -> Optional[int]:
    if not name or not name.isdigit():
        return None
    return int(name)
