"""`twinledger twin ...`: calibrate a patient's twin, forecast, compare treatment plans, heart-risk what-if.

    twinledger twin calibrate --virtual-patient adult#001 --days 3
    twinledger twin forecast  --csv records.csv --patient P-001 --horizon-min 120 --plot forecast.png
    twinledger twin whatif    --virtual-patient child#003 --plan "more basal:basal=0.9" \
                              --plan "snack:meal=600@30,bolus=600@2" --plot whatif.png
    twinledger twin heart     --data deploy/data/heart-disease/processed.cleveland.data \
                              --record cleveland-00001 --model run/model.pt

A patient comes from a virtual patient by name (simulated at home for --days days, a demo) or from a CSV
file of records in the layout of node/records/twin_csv.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from node.twins.calibration import DAY_MIN

PLAN_KEYS = {"basal": "basal_u_per_h", "cr": "carb_ratio_g_per_u", "cf": "correction_factor_mgdl_per_u",
             "target": "target_glucose_mgdl"}


def add_twin_commands(subparsers) -> None:
    twin = subparsers.add_parser("twin", help="patient twins: calibrate, forecast, what-if, heart risk")
    actions = twin.add_subparsers(dest="action", required=True)

    def patient_args(parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--virtual-patient", metavar="NAME", help="a UVA/Padova virtual patient, e.g. adult#001")
        source.add_argument("--csv", type=Path, metavar="FILE", help="a CSV file of patients' records")
        parser.add_argument("--patient", help="the patient id in --csv (default: the file's only patient)")
        parser.add_argument("--days", type=int, default=3, help="days of records to calibrate on (default 3)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the virtual patient's days")
        parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")

    calibrate = actions.add_parser("calibrate", help="personalise a twin and show its parameters")
    patient_args(calibrate)
    calibrate.set_defaults(func=_calibrate)

    forecast = actions.add_parser("forecast", help="glucose over the next hours, with bands")
    patient_args(forecast)
    forecast.add_argument("--horizon-min", type=int, default=120, help="how far ahead, in minutes (default 120)")
    forecast.add_argument("--plot", type=Path, help="write the forecast as a PNG here")
    forecast.set_defaults(func=_forecast)

    whatif = actions.add_parser("whatif", help="compare treatment plans (the current one always included)")
    patient_args(whatif)
    whatif.add_argument("--plan", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="basal=U/h, cr=g/U, cf=mg/dL/U, target=mg/dL, correct=0|1, bolus=MIN@U, meal=MIN@G "
                             "(times in minutes from now); repeatable")
    whatif.add_argument("--horizon-h", type=float, default=24.0, help="how long to simulate each plan, in hours (default 24)")
    whatif.add_argument("--members", type=int, default=16, help="calibration ensemble size (default 16)")
    whatif.add_argument("--plot", type=Path, help="write the trajectories as a PNG here")
    whatif.set_defaults(func=_whatif)

    heart = actions.add_parser("heart", help="a heart-disease patient's risk and its what-if at treatment targets")
    heart.add_argument("--data", type=Path, required=True, help="the hospital's UCI heart-disease CSV")
    heart.add_argument("--record", required=True, help="the patient's record number (e.g. cleveland-00001)")
    heart.add_argument("--model", type=Path, required=True, help="the federated model (a run's model.pt)")
    heart.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    heart.set_defaults(func=_heart)


def parse_plan(text: str):
    """'more basal:basal=0.9,bolus=120@1.5' -> TreatmentPlan."""
    from node.twins.whatif import TreatmentPlan

    name, _, spec = text.partition(":")
    if not name.strip():
        raise ValueError(f"plan {text!r}: give it a name before ':'")
    fields, boluses, meals = {}, [], []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            if key in PLAN_KEYS:
                fields[PLAN_KEYS[key]] = float(value)
            elif key == "correct":
                fields["correct_at_meals"] = value.strip() not in ("0", "false", "no")
            elif key in ("bolus", "meal"):
                time_min, amount = value.split("@")
                (boluses if key == "bolus" else meals).append((int(time_min), float(amount)))
            else:
                raise KeyError(key)
        except KeyError:
            raise ValueError(f"plan {name!r}: unknown key {key!r}; known: {', '.join([*PLAN_KEYS, 'correct', 'bolus', 'meal'])}") from None
        except ValueError:
            raise ValueError(f"plan {name!r}: cannot read {item!r} (e.g. basal=0.9, bolus=120@1.5)") from None
    return TreatmentPlan(name=name.strip(), extra_boluses=tuple(boluses), extra_meals=tuple(meals), **fields)


def _record(args):
    if args.days < 1 or args.days > 14:
        raise ValueError("--days must lie in 1-14")
    if args.virtual_patient:
        from node.twins.calibration import virtual_patient_record

        record, _ = virtual_patient_record(args.virtual_patient, days=args.days, seed=args.seed)
        return record
    from node.records.twin_csv import read_twin_csv

    records = {r.patient_id: r for r in read_twin_csv(args.csv)}
    if args.patient is None and len(records) != 1:
        raise ValueError(f"{args.csv} holds {len(records)} patients: name one with --patient")
    patient = args.patient or next(iter(records))
    if patient not in records:
        raise ValueError(f"no patient {patient!r} in {args.csv}")
    record = records[patient]
    return record.window(max(0, record.minutes - args.days * DAY_MIN), record.minutes)


def _twin(args):
    from node.twins.calibration import calibrate

    record = _record(args)
    return record, calibrate(record)


def _calibrate(args) -> int:
    record, twin = _twin(args)
    rows = twin.parameter_table()
    if args.json:
        print(json.dumps({"patient_id": twin.patient_id, "parameters": rows, "therapy": vars(twin.therapy),
                          "residual_sd_mgdl": twin.residual_sd_mgdl, "iterations": twin.iterations,
                          "converged": twin.converged}, indent=1))
        return 0
    print(f"twin of {twin.patient_id}: calibrated on {record.minutes / 60:.0f} h of records "
          f"({twin.iterations} iterations, CGM residual {twin.residual_sd_mgdl:.1f} mg/dL)")
    print(f"  therapy read from the record: basal {twin.therapy.basal_u_per_h:.2f} U/h, "
          f"CR {twin.therapy.carb_ratio_g_per_u:.1f} g/U, CF {twin.therapy.correction_factor_mgdl_per_u:.0f} mg/dL/U")
    print(f"  {'parameter':<10}{'MAP':>11}{'95% interval':>26}{'prior median':>15}  unit")
    for row in rows:
        print(f"  {row['symbol']:<10}{row['map']:>11.4g}   [{row['low_95']:>9.4g}, {row['high_95']:>9.4g}]"
              f"{row['prior_median']:>15.4g}  {row['unit']}")
    return 0


def _forecast(args) -> int:
    from node.twins.forecast import forecast

    record, twin = _twin(args)
    result = forecast(twin, record, horizon_min=args.horizon_min)
    if args.plot:
        from node.twins.plots import forecast_png

        args.plot.write_bytes(forecast_png(result, history_mgdl=record.cgm_mgdl))
    if args.json:
        print(json.dumps({"patient_id": twin.patient_id, "origin": result.origin.isoformat(), "method": result.method,
                          "time_min": result.time_min.tolist(), "median_mgdl": result.median_mgdl.round(1).tolist(),
                          "low_mgdl": result.low_mgdl.round(1).tolist(), "high_mgdl": result.high_mgdl.round(1).tolist()}))
        return 0
    print(f"forecast for {twin.patient_id} from {result.origin:%Y-%m-%d %H:%M} UTC ({result.method})")
    for minute in range(0, args.horizon_min + 1, 30 if args.horizon_min > 60 else 15):
        print(f"  +{minute:>4} min  {result.median_mgdl[minute]:6.0f} mg/dL  "
              f"(5-95%: {result.low_mgdl[minute]:.0f}-{result.high_mgdl[minute]:.0f})")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _whatif(args) -> int:
    from node.twins.whatif import TreatmentPlan, run_whatif

    plans = [TreatmentPlan(name="current")] + [parse_plan(text) for text in args.plan]
    record, twin = _twin(args)
    result = run_whatif(twin, record, plans, horizon_min=int(args.horizon_h * 60), members=args.members)
    if args.plot:
        from node.twins.plots import whatif_png

        args.plot.write_bytes(whatif_png(result))
    if args.json:
        print(json.dumps({"patient_id": twin.patient_id, "members": result.members, "meals": result.meals,
                          "plans": [{"name": o.plan.name, "median": o.median, "low": o.low, "high": o.high}
                                    for o in result.outcomes]}, indent=1))
        return 0
    print(f"what-if for {twin.patient_id} over {args.horizon_h:g} h, meals "
          + ", ".join(f"{g:.0f} g at +{t / 60:.1f} h" for t, g in result.meals)
          + f"; median (5-95%) over {result.members} calibrated twins")
    print(f"  {'plan':<18}{'in range':>18}{'<70':>16}{'<54':>16}{'>180':>18}{'LBGI':>14}{'HBGI':>16}{'mean mg/dL':>20}")
    for o in result.outcomes:
        def cell(metric, percent=True):
            scale, fmt = (100, "{:.0f}%") if percent else (1, "{:.1f}")
            return (fmt.format(o.median[metric] * scale) + " (" + fmt.format(o.low[metric] * scale).rstrip("%")
                    + "-" + fmt.format(o.high[metric] * scale) + ")")
        print(f"  {o.plan.name:<18}{cell('time_in_range_70_180'):>18}{cell('time_below_70'):>16}"
              f"{cell('time_below_54'):>16}{cell('time_above_180'):>18}{cell('lbgi', False):>14}"
              f"{cell('hbgi', False):>16}{cell('mean_glucose_mgdl', False):>20}")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _heart(args) -> int:
    import numpy as np

    from federation.tasks.heart_disease import HeartDiseaseTask, flamby_split
    from node.records.heart_csv import read_heart_disease_csv
    from node.twins.heart_risk import HeartRiskModel, heart_whatif, load_model_state

    prefix = args.data.name.split(".")[1] if args.data.name.count(".") >= 2 else args.data.stem
    records = read_heart_disease_csv(args.data, record_prefix=prefix)
    by_number = dict(records)
    if args.record not in by_number:
        raise ValueError(f"no record {args.record!r} in {args.data} (e.g. {records[0][0]})")
    task = HeartDiseaseTask()
    complete = [r for _, r in records if task.is_complete(r)]
    is_test = flamby_split(np.array([r["num"] for r in complete]))
    training = [r for r, test in zip(complete, is_test) if not test]
    model = HeartRiskModel.from_state_dict(load_model_state(args.model), training)
    result = heart_whatif(model, by_number[args.record], patient_id=args.record)
    if args.json:
        print(json.dumps({"patient_id": result.patient_id, "risk": result.risk, "note": result.note,
                          "scenarios": [vars(s) for s in result.scenarios], "contributions": result.contributions}, indent=1))
        return 0
    print(f"{result.patient_id}: predicted risk of coronary artery disease {result.risk:.0%} under the federated model")
    for s in result.scenarios:
        print(f"  {s.name}: {s.risk:.0%} ({s.change_in_risk:+.0%})")
    if not result.scenarios:
        print("  blood pressure and cholesterol are already at or below their targets (or not measured)")
    print(f"  {result.note}")
    return 0


__all__ = ["add_twin_commands", "parse_plan"]
