"""CT volumes: reading (NIfTI, DICOM), HU -> materials, and the Taichi projector."""
from .ct import CT
from .dicom import read_dicom_series
from .io import load_ct
from .materials import HUCalibration, Volume, threshold_weights
from .nifti import read_nifti, write_nifti
from .projector import VolumeProjector

__all__ = ["CT", "HUCalibration", "Volume", "VolumeProjector", "load_ct", "read_dicom_series", "read_nifti",
           "threshold_weights", "write_nifti"]
