"""Reading chest radiographs and the public datasets' layouts; splits; the prepared cache."""

from cxrlens.data.boxes import Box, rescale_boxes
from cxrlens.data.chexpert import CHEXPERT_CLASSES, CheXpert
from cxrlens.data.cohen import COHEN_CLASSES, CohenCovid
from cxrlens.data.folder import ImageFolder
from cxrlens.data.io import CXRImageError, read_image, read_image_size
from cxrlens.data.kermany import KERMANY_CLASSES, KermanyPneumonia
from cxrlens.data.nih import NIH_BOX_FINDINGS, NIH_CLASSES, NIHChestXray14
from cxrlens.data.records import CXRDataset, CXRItem, DatasetFormatError
from cxrlens.data.registry import READERS, SAMPLE_FOLDERS, combine, open_dataset, open_sample

__all__ = [
    "Box", "CHEXPERT_CLASSES", "COHEN_CLASSES", "CXRDataset", "CXRImageError", "CXRItem",
    "CheXpert", "CohenCovid", "DatasetFormatError", "ImageFolder", "KERMANY_CLASSES",
    "KermanyPneumonia", "NIHChestXray14", "NIH_BOX_FINDINGS", "NIH_CLASSES", "READERS",
    "SAMPLE_FOLDERS", "combine", "open_dataset", "open_sample", "read_image",
    "read_image_size", "rescale_boxes",
]  # fmt: skip
