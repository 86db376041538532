"""Pages: launch form, run page with live progress, versions list, comparison, and a channel's
"Try it" form."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from core.errors import ApplicationError
from core.permissions import can, permission_required_for_page
from training_app.charts import bar_chart, line_chart
from training_app.errors import ModelVersionNotFound, TrainingRunNotFound
from training_app.estimate_selectors import RunEstimate, dataset_version_to_preselect, run_estimate
from training_app.forms import LaunchForm
from training_app.progress_selectors import version_evaluations_progress
from training_app.selectors import (
    base_models_list,
    can_view_training,
    latest_evaluation,
    model_version_evaluations,
    model_version_get,
    model_versions_list,
    training_run_get,
    training_runs_list,
)
from training_app.services import (
    can_launch_training,
    training_run_cancel,
    training_run_check,
    training_run_create,
)

COMPARED = ("eval_loss", "perplexity", "exact_match", "token_f1", "rouge_l", "length_ratio")


def require_training_viewer(request):
    if not can_view_training(request.user):
        raise PermissionDenied(
            "Training pages are for ML engineers, approvers, deployers, auditors and admins."
        )


@login_required
@require_safe
def index(request):
    require_training_viewer(request)
    return render(
        request,
        "training_app/index.html",
        {
            "runs": training_runs_list()[:30],
            "versions": model_versions_list()[:30],
            "base_models": base_models_list(),
            "can_launch": can_launch_training(request.user),
        },
    )


@login_required
@permission_required_for_page(
    "training.launch", "Only ML engineers and admins launch training runs."
)
def launch(request):
    if request.method == "POST":
        form = LaunchForm(request.POST)
    else:
        preselected = dataset_version_to_preselect(requested=request.GET.get("dataset_version"))
        form = LaunchForm(initial={"dataset_version": preselected})
    if request.method == "POST" and form.is_valid():
        try:
            run = training_run_create(
                user=request.user,
                dataset_version=form.cleaned_data["dataset_version"],
                base_model=form.cleaned_data["base_model"],
                parent_version=form.cleaned_data["parent_version"],
                hyperparameters=form.hyperparameters(),
                name=form.cleaned_data["name"],
            )
        except ApplicationError as exc:
            field = (exc.field or "").removeprefix("hyperparameters.")
            form.add_error(field if field in form.fields else None, exc.message)
        else:
            # No flash message: the run page says "queued" from the run's state, so the
            # banner cannot outlive the state it announced while the page updates itself.
            return redirect("training:run", run_id=run.pk)
    estimate, problem = _run_estimate(request, form)
    return render(
        request,
        "training_app/launch.html",
        {"form": form, "estimate": estimate, "estimate_problem": problem},
        status=400 if form.errors else 200,
    )


def _run_estimate(request, form: LaunchForm) -> tuple[RunEstimate | None, str]:
    """The run form's estimate from what it holds now (a submitted or re-shown form, the htmx
    fragment's fields; else the form's initial dataset and nothing set), checked and fitted by
    the service that creates the run, so it counts the steps the run will take. Returns
    (estimate, "") or (None, why there is none)."""
    if form.is_bound:
        form.is_valid()  # the fields that are valid are in cleaned_data
        values = form.cleaned_data
    else:
        values = {"dataset_version": form.initial.get("dataset_version")}
    dataset_version = values.get("dataset_version")
    if dataset_version is None:
        return None, ""
    try:
        plan = training_run_check(
            user=request.user,
            dataset_version=dataset_version,
            base_model=values.get("base_model"),
            parent_version=values.get("parent_version"),
            hyperparameters=form.hyperparameters() if form.is_bound else {},
        )
    except ApplicationError as exc:
        return None, exc.message
    if plan.recipe is None:  # never: a dataset version was given
        return None, ""
    return run_estimate(
        dataset_version=dataset_version, base_model=plan.base_model, recipe=plan.recipe
    ), ""


@login_required
@require_safe
@permission_required_for_page(
    "training.launch", "Only ML engineers and admins launch training runs."
)
def launch_estimate(request):
    """The run form's estimate as a fragment, asked for again whenever the form changes."""
    estimate, problem = _run_estimate(request, LaunchForm(request.GET))
    return render(
        request,
        "training_app/_run_estimate.html",
        {"estimate": estimate, "estimate_problem": problem},
    )


def _run(run_id):
    try:
        return training_run_get(run_id=run_id)
    except TrainingRunNotFound as exc:
        raise Http404(exc.message) from exc


def _run_context(request, run_id):
    run = _run(run_id)
    evals = [(e["step"], e["eval_loss"]) for e in run.eval_history]
    curves = line_chart(
        {"train loss": [tuple(p[:2]) for p in run.loss_history], "eval loss": evals},
        title="Train and eval loss",
    )
    return {
        "run": run,
        "version": getattr(run, "model_version", None),
        "curves": curves,
        "can_launch": can_launch_training(request.user),
    }


@login_required
@require_safe
def run_detail(request, run_id):
    require_training_viewer(request)
    return render(request, "training_app/run.html", _run_context(request, run_id))


@login_required
@require_safe
def run_progress(request, run_id):
    """The live part of the run page, polled every two seconds while the run is active."""
    require_training_viewer(request)
    return render(request, "training_app/_run_progress.html", _run_context(request, run_id))


@login_required
@require_POST
def run_cancel(request, run_id):
    run = _run(run_id)
    try:
        training_run_cancel(user=request.user, run=run)
    except ApplicationError as exc:
        if exc.status_code == 403:
            raise PermissionDenied(exc.message) from exc
        messages.error(request, exc.message)
    else:
        messages.success(request, "Cancel requested.")
    return redirect("training:run", run_id=run.pk)


@login_required
@require_safe
def version_list(request):
    require_training_viewer(request)
    return render(request, "training_app/versions.html", {"versions": model_versions_list()})


@login_required
@require_safe
def version_detail(request, version_id):
    """The comparison page: the version's latest evaluation against its reference, plotted."""
    require_training_viewer(request)
    return render(request, "training_app/version.html", _version_context(request, version_id))


@login_required
@require_safe
def version_evaluation(request, version_id):
    """The live part of the version page, polled while an evaluation of it is unfinished."""
    require_training_viewer(request)
    return render(
        request, "training_app/_version_evaluation.html", _version_context(request, version_id)
    )


def _version_context(request, version_id) -> dict:
    try:
        version = model_version_get(version_id=version_id)
    except ModelVersionNotFound as exc:
        raise Http404(exc.message) from exc
    evaluation = latest_evaluation(version=version)
    chart, rows = None, []
    if evaluation is not None:
        candidate, reference = evaluation.metrics["candidate"], evaluation.metrics["reference"]
        label = evaluation.reference_label
        groups = {
            name: {version.name: candidate[name], label: reference[name]}
            for name in COMPARED
            if name in candidate and name in reference
        }
        chart = bar_chart(groups, title="Candidate vs reference")
        rows = [(name, candidate[name], reference[name]) for name in groups]
    return {
        "version": version,
        "evaluation": evaluation,
        "evaluations": model_version_evaluations(version=version),
        "progress": version_evaluations_progress(version=version),
        "can_request_signoff": can(request.user, "signoff.request"),
        "chart": chart,
        "rows": rows,
        "lower_is_better": {"eval_loss", "perplexity"},
    }
