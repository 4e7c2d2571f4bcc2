"""Statistical shape models: Procrustes alignment, PCA, model quality, the LLP26 pelvis population.

``ShapeModel`` (mean, faces, modes, std; ``instance``, ``sample``, ``project``,
``save``/``load``), ``build_model`` (shapes in correspondence),
``build_from_meshes`` (meshes not in correspondence: ICP + non-rigid registration),
``evaluate`` (compactness, generalisation, specificity), ``build_pelvis_model`` /
``load_pelvis_model`` (the real LLP26 population).
"""
from .build import build_from_meshes, build_model, pca
from .model import ShapeModel
from .pelvis import build_pelvis_model, llp26_population, load_pelvis_model
from .procrustes import Similarity, align, generalized_procrustes
from .quality import QualityReport, evaluate

__all__ = ["QualityReport", "ShapeModel", "Similarity", "align", "build_from_meshes", "build_model",
           "build_pelvis_model", "evaluate", "generalized_procrustes", "llp26_population", "load_pelvis_model", "pca"]
