"""Coronary artery disease from the UCI Heart Disease records ("heart-disease/v1"): the task (task.py) and its
readers (readers.py: the UCI CSV here, FHIR R4 on the node)."""

from federation.tasks.heart_disease.task import *  # noqa: F401,F403 (the task's public names, as before the package)
from federation.tasks.heart_disease.task import HeartDiseaseTask

TASK = HeartDiseaseTask()
