"""A round's metrics from the nodes' evaluation sums: pooled (every node's sums added up, then the task's
`summarise`: every metric weighted by examples, exactly) and per hospital (each node's own sums). A headline
declared MEAN_OVER_HOSPITALS is the unweighted mean of the hospitals' values instead, and says so."""

from __future__ import annotations

from federation.tasks.base import MEAN_OVER_HOSPITALS, FederatedTask, add_sums, subgroup_key


def round_metrics(task: FederatedTask, sums_by_hospital: dict[str, dict[str, float]]) -> tuple[dict, dict, dict]:
    """(pooled metrics, hospital name -> that hospital's metrics, axis -> group -> that subgroup's metrics). Sums
    are the nodes' noisy releases: a small hospital's or group's metrics are noisier than the pooled ones."""
    pooled = task.summarise(add_sums(list(sums_by_hospital.values())))
    per_hospital = {name: task.summarise(add_sums([sums])) for name, sums in sums_by_hospital.items()}
    if task.headline.pooling == MEAN_OVER_HOSPITALS:
        values = [m[task.headline.name] for m in per_hospital.values() if m.get(task.headline.name) is not None]
        pooled[task.headline.name] = sum(values) / len(values) if values else None
    return pooled, per_hospital, subgroup_metrics(task, sums_by_hospital)


def subgroup_metrics(task: FederatedTask, sums_by_hospital: dict[str, dict[str, float]]) -> dict[str, dict[str, dict]]:
    """axis -> group -> the task's metrics of that group's patients, from the same added-up (noisy) sums."""
    total = add_sums(list(sums_by_hospital.values()))
    found: dict[str, dict[str, dict]] = {}
    for subgroup in task.subgroups:
        for group in subgroup.groups:
            prefix = subgroup_key(subgroup.axis, group, "")
            sums = {key[len(prefix):]: value for key, value in total.items() if key.startswith(prefix)}
            found.setdefault(subgroup.axis, {})[group] = task.summarise(sums) if sums else {}
    return found
