"""Training runs: create, check and cancel; the status moves of a run and its model version.

A run is claimed through a database lease (owner + heartbeat) so that a duplicate Dramatiq
delivery does nothing; a sweeper takes back runs whose heartbeat went stale and fails them after
a configured number of lost attempts, and sends again the message of a queued run that the
broker lost (Redis restarted empty): the database, not Redis, is the source of truth. A worker
claims and executes a run in `worker` (torch is imported only inside `training_run_execute`),
the sweeper is `sweep`, and the lease helpers that evaluations share are in `leases`.
"""

import re
from pathlib import Path
from typing import Any, NamedTuple

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from config.dramatiq import send_after_commit
from core.audit import audit_append
from core.jobs import JobSpec, gave_up_reason
from core.lifecycle import transition
from core.permissions import can
from datasets_app.models import DatasetVersion
from training_app.errors import (
    InvalidTrainingRequest,
    LeaseLost,
    TrainingForbidden,
    TransitionRefused,
)
from training_app.estimate_selectors import run_recipe
from training_app.models import BaseModel, ModelVersion, TrainingRun
from training_app.services import leases
from training_app.services.base_models import base_model_default
from training_app.services.versions import model_version_transition
from training_app.training.hyperparameters import HyperparameterError
from training_app.training.hyperparameters import validate as validate_hyperparameters
from training_app.training.recipe import Recipe

# A parent must have trained successfully and not have been turned down.
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PARENT_STATUSES = {
    ModelVersion.Status.TRAINED,
    ModelVersion.Status.EVALUATED,
    ModelVersion.Status.AWAITING_SIGNOFF,
    ModelVersion.Status.APPROVED,
    ModelVersion.Status.DEPLOYED,
}

_conf = leases.training_conf


def can_launch_training(user: AbstractBaseUser) -> bool:
    return can(user, "training.launch")


def _run_transition(
    *,
    run: TrainingRun,
    to: str,
    actor: AbstractBaseUser | None,
    owner: str | None = None,
    payload: dict[str, Any] | None = None,
    **fields: Any,
) -> TrainingRun:
    """Compare-and-set of the run's status (and, for a worker, its lease), with an audit event.
    Runs inside the caller's transaction."""
    return transition(
        run,
        to,
        refused=lambda frm, to: TransitionRefused(
            f"Training run {run.pk} cannot go from {frm} to {to}."
        ),
        changed=lambda frm: (
            LeaseLost(f"Training run {run.pk} is no longer held by {owner}.")
            if owner is not None
            else TransitionRefused(f"Training run {run.pk} changed under us (was {frm}).")
        ),
        where={"lease_owner": owner} if owner is not None else None,
        fields=fields,
        refresh=True,
        audit=audit_append,
        audit_as="training_run",
        actor=actor,
        payload=payload,
    )


# -- create and cancel ------------------------------------------------------------------------


class RunPlan(NamedTuple):
    base_model: BaseModel
    hyperparameters: dict[str, Any]  # complete: given, fitted to the data, else the defaults
    name: str
    recipe: Recipe | None  # None: no dataset version to fit the schedule to


def training_run_check(
    *,
    user: AbstractBaseUser,
    dataset_version: DatasetVersion | None,
    base_model: BaseModel | None = None,
    parent_version: ModelVersion | None = None,
    hyperparameters: dict[str, Any] | None = None,
    name: str = "",
) -> RunPlan:
    """Every check of `training_run_create`, with no side effect: the base model, the complete
    hyperparameters, the clean name, and the recipe that fitted the schedule fields the
    request left out to the dataset version's training split (`training/recipe.py`; what the
    request set is never changed). Flows that must do slow work first (building a dataset)
    call it before, so a bad request leaves nothing behind. dataset_version=None skips its
    check and the fitting."""
    if not can_launch_training(user):
        raise TrainingForbidden("Only ML engineers and admins launch training runs.")
    if dataset_version is not None and dataset_version.status != DatasetVersion.Status.READY:
        raise InvalidTrainingRequest(
            f"Dataset version {dataset_version.pk} is {dataset_version.status}, not ready.",
            field="dataset_version",
        )
    if parent_version is not None:
        if parent_version.status not in PARENT_STATUSES:
            raise InvalidTrainingRequest(
                f"Model version {parent_version.name} is {parent_version.status}; "
                "only a trained version can be continued.",
                field="parent_version",
            )
        if base_model is not None and base_model.pk != parent_version.base_model_id:
            raise InvalidTrainingRequest(
                "The base model must be the parent version's base model.", field="base_model"
            )
        base_model = parent_version.base_model
    if base_model is None:
        base_model = base_model_default()
        if base_model is None:
            raise InvalidTrainingRequest(
                "No base model is registered: run `manage.py prepare_base_model`.",
                field="base_model",
            )
    try:
        params = validate_hyperparameters(hyperparameters, architecture=base_model.architecture)
    except HyperparameterError as exc:
        raise InvalidTrainingRequest(str(exc), field=f"hyperparameters.{exc.field}") from exc
    if parent_version is not None:
        # The adapter's shape is the parent's: its LoRA settings win over the request's.
        parent_params = parent_version.config.get("hyperparameters", {})
        for key in ("lora_r", "lora_alpha", "target_modules"):
            if key in parent_params:
                params[key] = parent_params[key]
    recipe = None
    if dataset_version is not None:
        # A continued run is fitted the same way: its schedule is about the data it trains on
        # now (the recipe never touches the adapter's shape, the parent's above).
        recipe = run_recipe(
            dataset_version=dataset_version,
            hyperparameters=params,
            explicit=set(hyperparameters or {}),
        )
        params = recipe.hyperparameters
    name = name.strip()
    if len(name) > 100:
        raise InvalidTrainingRequest("At most 100 characters.", field="name")
    if name and not VERSION_NAME.fullmatch(name):
        # Names end up in file names, headers and URLs.
        raise InvalidTrainingRequest(
            "Letters, digits, '.', '_' and '-' only (it names files and URLs).", field="name"
        )
    if name and ModelVersion.objects.filter(name=name).exists():
        raise InvalidTrainingRequest(f"A model version named {name} exists.", field="name")
    return RunPlan(base_model, params, name, recipe)


def training_run_create(
    *,
    user: AbstractBaseUser,
    dataset_version: DatasetVersion,
    base_model: BaseModel | None = None,
    parent_version: ModelVersion | None = None,
    hyperparameters: dict[str, Any] | None = None,
    name: str = "",
    enqueue: bool = True,
) -> TrainingRun:
    """Validate everything up front, record the run and its model version (status training),
    with the recipe that fitted its schedule (`config["recipe"]`: the fields fitted, the ones
    given, and why), and queue it for a worker once the transaction commits."""
    base_model, params, name, recipe = training_run_check(
        user=user,
        dataset_version=dataset_version,
        base_model=base_model,
        parent_version=parent_version,
        hyperparameters=hyperparameters,
        name=name,
    )
    with transaction.atomic():
        run = TrainingRun.objects.create(
            dataset_version=dataset_version,
            base_model=base_model,
            parent_version=parent_version,
            hyperparameters=params,
            created_by=user,
            progress={"step": 0, "total_steps": None},
        )
        run.work_dir = str(Path(_conf("RUNS_DIR")) / str(run.pk))
        run.save(update_fields=["work_dir"])
        version = ModelVersion.objects.create(
            name=name or f"{slugify(dataset_version.name)[:60] or 'model'}-{run.pk.hex[:8]}",
            run=run,
            parent=parent_version,
            base_model=base_model,
            base_model_ref=base_model.reference,
            dataset_version=dataset_version,
            created_by=user,
            config={
                "hyperparameters": params,
                "base_model": base_model.reference,
                "dataset_version": {
                    "id": dataset_version.pk,
                    "name": dataset_version.name,
                    "manifest_hash": dataset_version.manifest_hash,
                },
                "parent_version": str(parent_version.pk) if parent_version else None,
                "recipe": recipe.record() if recipe is not None else None,
            },
        )
        audit_append(
            actor=user,
            action="training_run.create",
            object_type="training_run",
            object_id=run.pk,
            payload={
                "model_version": str(version.pk),
                "model_version_name": version.name,
                "dataset_version": dataset_version.pk,
                "manifest_hash": dataset_version.manifest_hash,
                "base_model": base_model.name,
                "parent_version": str(parent_version.pk) if parent_version else None,
                "hyperparameters": params,
            },
        )
        if enqueue:
            _enqueue_training(run.pk)
    return run


def _enqueue_training(run_id: Any) -> str:
    """Send the run's message once the caller's transaction commits, and record its id on the
    row in that transaction, so the sweep can tell a lost message from one still waiting."""
    from training_app.tasks import train_model_version

    message = send_after_commit(train_model_version, str(run_id))
    TrainingRun.objects.filter(pk=run_id).update(
        message_id=message.message_id, enqueued_at=timezone.now()
    )
    return message.message_id


def training_run_cancel(*, user: AbstractBaseUser, run: TrainingRun) -> TrainingRun:
    """A queued run is cancelled at once; a running one at its worker's next step."""
    if not can_launch_training(user):
        raise TrainingForbidden("Only ML engineers and admins cancel training runs.")
    with transaction.atomic():
        # Locked: the worker may be claiming or finishing it right now.
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status == TrainingRun.Status.QUEUED:
            _end_run(run=run, to=TrainingRun.Status.CANCELLED, actor=user, reason="cancelled")
        elif run.status == TrainingRun.Status.RUNNING:
            if run.cancel_requested_at is None:
                TrainingRun.objects.filter(pk=run.pk).update(cancel_requested_at=timezone.now())
                audit_append(
                    actor=user,
                    action="training_run.cancel_requested",
                    object_type="training_run",
                    object_id=run.pk,
                    payload={},
                )
            run.refresh_from_db()
        else:
            raise TransitionRefused(f"Training run {run.pk} is {run.status}; nothing to cancel.")
    return run


def _end_run(
    *,
    run: TrainingRun,
    to: str,
    actor: AbstractBaseUser | None,
    reason: str,
    owner: str | None = None,
    **fields: Any,
) -> TrainingRun:
    """A terminal run transition and its version's (cancelled / failed) together."""
    run = _run_transition(
        run=run,
        to=to,
        actor=actor,
        owner=owner,
        payload={"reason": reason},
        finished_at=timezone.now(),
        failure_reason=reason if to == TrainingRun.Status.FAILED else "",
        **fields,
    )
    version = ModelVersion.objects.get(run=run)
    model_version_transition(
        version=version,
        to=ModelVersion.Status.FAILED if to == TrainingRun.Status.FAILED else to,
        actor=actor,
        payload={"run": str(run.pk), "reason": reason},
    )
    return run


# -- the job: what core.jobs needs to heartbeat, sweep and resend a run ------------------------


def _sweep_requeue(run: TrainingRun, lost: str, now: Any) -> bool:
    _run_transition(
        run=run,
        to=TrainingRun.Status.QUEUED,
        actor=None,
        owner=run.lease_owner,
        payload={"reason": lost, "attempts": run.attempts},
        lease_owner="",
        heartbeat_at=None,
    )
    _enqueue_training(run.pk)
    return True


def _sweep_fail(run: TrainingRun, lost: str, now: Any) -> bool:
    reason = gave_up_reason(run.attempts, lost)
    _end_run(
        run=run, to=TrainingRun.Status.FAILED, actor=None, reason=reason, owner=run.lease_owner
    )
    return True


def _sweep_cancel(run: TrainingRun, lost: str, now: Any) -> bool:
    _end_run(
        run=run, to=TrainingRun.Status.CANCELLED, actor=None, reason=lost, owner=run.lease_owner
    )
    return True


def _training_actor() -> Any:
    from training_app.tasks import train_model_version

    return train_model_version


TRAINING_RUN_JOB = JobSpec(
    model=TrainingRun,
    audit_as="training_run",
    stale_after_s=leases.stale_after_seconds,
    resend_after_s=leases.resend_after_seconds,
    max_attempts=leases.max_attempts,
    actor=_training_actor,
    enqueue=_enqueue_training,
    cancel_requested=lambda run: run.cancel_requested_at is not None,
    requeue=_sweep_requeue,
    fail=_sweep_fail,
    cancel=_sweep_cancel,
)
