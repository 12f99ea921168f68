"""Patient digital twins: the UVA/Padova type 1 diabetes model over cohorts, CGM sensors and insulin pumps."""

from node.twins.uva_padova import Cohort, PatientParameters, Scenario, Trajectories, load_patient, patient_names, simulate

__all__ = ["Cohort", "PatientParameters", "Scenario", "Trajectories", "load_patient", "patient_names", "simulate"]
