"""Patch datasets in their original layouts: PhotoTour (Brown/UBC) and HPatches."""

from __future__ import annotations

from .hpatches import (
    HPatches,
    ImageSequence,
    load_hpatches_patches,
    load_hpatches_sequence,
    load_verification_pairs,
    make_retrieval_queries,
    make_verification_pairs,
    matching_task,
    retrieval_task,
    select_sequences,
    verification_task,
)
from .phototour import (
    DatasetFormatError,
    PhotoTour,
    decode_sheet,
    download_phototour,
    evaluate_phototour,
    extract_archive,
    list_sheets,
)

__all__ = [
    "DatasetFormatError",
    "HPatches",
    "ImageSequence",
    "PhotoTour",
    "decode_sheet",
    "download_phototour",
    "evaluate_phototour",
    "extract_archive",
    "list_sheets",
    "load_hpatches_patches",
    "load_hpatches_sequence",
    "load_verification_pairs",
    "make_retrieval_queries",
    "make_verification_pairs",
    "matching_task",
    "retrieval_task",
    "select_sequences",
    "verification_task",
]
