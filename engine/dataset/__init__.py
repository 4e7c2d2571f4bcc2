"""Labelled synthetic fluoroscopy datasets from a sampling plan: locally, in worker processes, or on Ray.

:mod:`.plan` (the YAML plan, validated; deterministic samples), :mod:`.scene` (a CT with its structures,
landmarks and meshes; one image and its labels), :mod:`.write` (the documented layout: shards, manifest),
:mod:`.run` (1 process, N workers or Ray tasks, resumable).  ``engine dataset PLAN.yaml --out DIR``.
"""
from .plan import Plan, Sample, load_plan, parse_plan, sample
from .run import run

__all__ = ["Plan", "Sample", "load_plan", "parse_plan", "run", "sample"]
