"""Recurrence-free survival after breast cancer, German Breast Cancer Study Group 2 ("breast-cancer-survival/v1"):
a discrete-time hazard model (task.py), its concordance index from binned counts (concordance.py), its CSV
reader (readers.py) and its demo data, GBSG2 split across three hospitals (demo.py)."""

from federation.tasks.breast_cancer_survival.task import *  # noqa: F401,F403 (the task's public names)
from federation.tasks.breast_cancer_survival.task import BreastCancerSurvivalTask

TASK = BreastCancerSurvivalTask()
