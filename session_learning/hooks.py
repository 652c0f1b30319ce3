"""Why a model did or did not learn: the learning assets' hooks record every step's outcome.

The hooks run inside the step (in-process runs, ``dagster job execute``, the demo,
``dg.materialize``, the UI, the daemon), so every run leaves its outcome in the journal's
``learning_outcomes`` table whether or not a sensor is running. The run-failure sensor uses
the same functions for a failed step whose hook could not record (a crashed step process, an
unreachable journal at that moment).
"""

from __future__ import annotations

import dagster as dg

from session_learning.resources.outcomes import (
    SESSION,
    Outcome,
    OutcomeStore,
    rerun_command,
    split_step_key,
)

PARTITION_TAG = "dagster/partition"
# What Dagster raises when a blocking asset check (a gate) failed: a decision, not an error.
GATE_FAILURE = "DagsterAssetCheckFailedError"


def gate_lines(instance: dg.DagsterInstance, run_id: str, model: str) -> tuple[list, list]:
    """``(failed, passed)`` gate descriptions of the model's candidate in ``run_id``, each with
    its value, threshold and production value, from the run's check evaluations."""
    key = dg.AssetKey([model, "candidate_model"])
    failed, passed = [], []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.asset_key != key:
            continue
        meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
        line = f"{evaluation.check_name}: {evaluation.description or ''}".rstrip(": ")
        production = meta.get("production_value")
        if isinstance(production, int | float):
            line += f" (production {production:.4g})"
        elif production is not None:
            line += f" (production {production})"
        (passed if evaluation.passed else failed).append(line)
    return failed, passed


def _materialized_version(instance: dg.DagsterInstance, run_id: str, model: str) -> str | None:
    key = dg.AssetKey([model, "candidate_model"])
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.dagster_event.event_specific_data.materialization
        if materialization.asset_key == key and "version" in materialization.metadata:
            return str(materialization.metadata["version"].value)
    return None


def failure_outcome(
    instance: dg.DagsterInstance,
    run_id: str,
    session: str,
    step_key: str,
    error_class: str,
    error_message: str,
) -> Outcome:
    """The outcome of a failed step: a gate rejection with every failed gate's numbers, or an
    error with its cause, the fix the error states, and how to re-run the session."""
    model, step = split_step_key(step_key)
    if error_class == GATE_FAILURE and model != SESSION:
        failed, passed = gate_lines(instance, run_id, model)
        version = _materialized_version(instance, run_id, model)
        message = (
            f"{model} session {session}: candidate {version or '?'} rejected by "
            f"{len(failed)} gate(s): " + "; ".join(failed or [error_message.strip()])
        )
        message += ". Production is unchanged."
        return Outcome(
            session, model, step, "rejected", message, run_id, version,
            {"failed_gates": failed, "passed_gates": passed},
        )  # fmt: skip
    cause = error_message.strip() or "(no message)"
    message = (
        f"{'session' if model == SESSION else model} session {session}: {step} failed with "
        f"{error_class}: {cause}\nFix the cause above, then re-run the session: "
        f"{rerun_command(session)}"
    )
    return Outcome(
        session, model, step, "error", message, run_id, None,
        {"error_class": error_class, "error": cause, "rerun": rerun_command(session)},
    )  # fmt: skip


def success_outcomes(
    instance: dg.DagsterInstance, run_id: str, session: str, step_key: str, value: object
) -> list[Outcome]:
    """The outcomes a successful step states (none for the steps that decide nothing)."""
    model, step = split_step_key(step_key)
    if step == "problem_report" and isinstance(value, dict):
        trigger = value.get("trigger", {}).get("message", "")
        out = []
        for slug, plan in value.get("plans", {}).items():
            reasons = "; ".join(plan.get("reasons", [])) or "no reason given"
            if plan.get("retrain"):
                kind, text = "training", f"retraining: {reasons}"
            else:
                why = reasons if trigger in reasons else f"{reasons} ({trigger})"
                kind, text = "untouched", f"not retrained this session: {why}"
            out.append(
                Outcome(session, slug, step, kind, f"{slug} session {session}: {text}", run_id)
            )
        return out
    if step == "candidate_model" and isinstance(value, dict):
        failed, passed = gate_lines(instance, run_id, model)
        version = value.get("version")
        message = f"{model} session {session}: candidate {version} passed every gate: " + (
            "; ".join(passed) or "-"
        )
        return [
            Outcome(
                session, model, step, "passed", message, run_id, version,
                {"passed_gates": passed},
            )
        ]  # fmt: skip
    if step == "deployed_model" and isinstance(value, dict):
        promoted = bool(value.get("promoted"))
        summary = value.get("summary") or ("deployed" if promoted else "not deployed")
        _, passed = gate_lines(instance, run_id, model)  # judged in this run, if it was
        if passed:
            summary += "; gates: " + "; ".join(passed)
        return [
            Outcome(
                session, model, step, "deployed" if promoted else "not_deployed",
                f"{model} session {session}: {summary}", run_id, value.get("version"),
                {k: v for k, v in value.items() if isinstance(v, str | bool | int | float)},
            )
        ]  # fmt: skip
    return []


def _session(context: dg.HookContext) -> str | None:
    run = context.instance.get_run_by_id(context.run_id)
    return run.tags.get(PARTITION_TAG) if run is not None else None


def outcome_hooks(partitions_def: dg.TimeWindowPartitionsDefinition) -> set[dg.HookDefinition]:
    """Hooks for the learning assets: record each step's outcome (and ``session_trades``'
    journal rows, for late-trade detection) in the journal's outcome store."""

    @dg.success_hook(name="record_learning_outcome", required_resource_keys={"journal"})
    def record_learning_outcome(context: dg.HookContext) -> None:
        session = _session(context)
        if session is None:
            return
        store = OutcomeStore(context.resources.journal.journal())
        value = (context.op_output_values or {}).get("result")
        if context.step_key == "session_trades" and value is not None:
            window = partitions_def.time_window_for_partition_key(session)
            store.record_read(session, window.start, window.end, context.run_id, value["row_id"])
            return
        for outcome in success_outcomes(
            context.instance, context.run_id, session, context.step_key, value
        ):
            store.record(outcome)

    @dg.failure_hook(name="record_learning_failure", required_resource_keys={"journal"})
    def record_learning_failure(context: dg.HookContext) -> None:
        session = _session(context)
        if session is None:
            return
        error = context.op_exception
        outcome = failure_outcome(
            context.instance,
            context.run_id,
            session,
            context.step_key,
            type(error).__name__ if error is not None else "UnknownError",
            str(error) if error is not None else "the step failed without an exception",
        )
        OutcomeStore(context.resources.journal.journal()).record(outcome)

    return {record_learning_outcome, record_learning_failure}
