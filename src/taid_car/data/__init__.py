"""Images and datasets: validated image IO, benchmark sets, training patches, the embedded
sample set (scikit-image's images, no download) and DIV2K/benchmark downloads.

All images are RGB float32 tensors in [0, 1], shape (3, H, W).
"""

from .datasets import (
    HR_SUBFOLDERS,
    BenchmarkDataset,
    InMemoryImage,
    TrainPatchDataset,
    benchmark_min_size,
    dihedral,
    resolve_hr_folder,
)
from .download import (
    DATASETS,
    ChecksumError,
    DatasetNotFoundError,
    RemoteDataset,
    dataset_folder,
    default_cache_dir,
    ensure_dataset,
    lookup_dataset,
)
from .io import (
    IMAGE_EXTENSIONS,
    ImageError,
    LoadedImage,
    MissingFolderError,
    RawImage,
    check_min_size,
    list_images,
    load_image,
    modcrop,
    probe_size,
    read_image,
    read_image_raw,
    save_image,
)
from .sample import SAMPLE_SPLITS, SampleDataset, sample_dir, sample_paths, sample_split

__all__ = [
    "DATASETS",
    "HR_SUBFOLDERS",
    "IMAGE_EXTENSIONS",
    "SAMPLE_SPLITS",
    "BenchmarkDataset",
    "ChecksumError",
    "DatasetNotFoundError",
    "ImageError",
    "InMemoryImage",
    "LoadedImage",
    "MissingFolderError",
    "RawImage",
    "RemoteDataset",
    "SampleDataset",
    "TrainPatchDataset",
    "benchmark_min_size",
    "check_min_size",
    "dataset_folder",
    "default_cache_dir",
    "dihedral",
    "ensure_dataset",
    "list_images",
    "load_image",
    "lookup_dataset",
    "modcrop",
    "probe_size",
    "read_image",
    "read_image_raw",
    "resolve_hr_folder",
    "sample_dir",
    "sample_paths",
    "sample_split",
    "save_image",
]
