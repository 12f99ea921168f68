"""Glucose forecasting for type 1 diabetes ("glucose-forecast/v1"): task.py; its records are read on the node
(node/records/twin_csv.py, twin_fhir.py), named in the task's `readers`."""

from federation.tasks.glucose_forecast.task import *  # noqa: F401,F403 (the task's public names, as before the package)
from federation.tasks.glucose_forecast.task import GlucoseForecastTask

TASK = GlucoseForecastTask()
