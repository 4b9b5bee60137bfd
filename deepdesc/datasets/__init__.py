"""Layer 6, data sets (loading only; benchmarks are in :mod:`deepdesc.eval`).

PhotoTour (Brown/UBC) and HPatches patches in their original layouts, homography image sequences
(Oxford, HPatches-sequences) and multi-view scenes with cameras (Strecha, COLMAP models).
"""

from .hpatches import HPatches, load_hpatches_patches, select_sequences
from .phototour import PhotoTour, decode_sheet, download_phototour, extract_archive, list_sheets
from .sequences import ImageSequence, load_hpatches_sequence

__all__ = [
    # hpatches
    "HPatches",
    "load_hpatches_patches",
    "select_sequences",
    # phototour
    "PhotoTour",
    "decode_sheet",
    "download_phototour",
    "extract_archive",
    "list_sheets",
    # sequences
    "ImageSequence",
    "load_hpatches_sequence",
]
