"""Pages: launch form, run page with live progress, versions list, comparison, and a channel's
"Try it" form."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from config.errors import ApplicationError
from reviews.models import Output

from .charts import bar_chart, line_chart
from .errors import ModelVersionNotFound, TrainingRunNotFound
from .forms import LaunchForm
from .models import Channel
from .selectors import (
    base_models_list,
    can_view_training,
    latest_evaluation,
    model_version_evaluations,
    model_version_get,
    model_versions_list,
    training_run_get,
    training_runs_list,
)
from .services import can_launch_training, training_run_cancel, training_run_create
from .services.serving import channel_generate

COMPARED = ("eval_loss", "perplexity", "exact_match", "token_f1", "rouge_l", "length_ratio")


def _viewer(request):
    if not can_view_training(request.user):
        raise PermissionDenied(
            "Training pages are for ML engineers, approvers, deployers, auditors and admins."
        )


@login_required
@require_safe
def index(request):
    _viewer(request)
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
def launch(request):
    if not can_launch_training(request.user):
        raise PermissionDenied("Only ML engineers and admins launch training runs.")
    form = LaunchForm(request.POST or None)
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
            messages.success(request, "Training run queued.")
            return redirect("training:run", run_id=run.pk)
    return render(
        request, "training_app/launch.html", {"form": form}, status=400 if form.errors else 200
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
    _viewer(request)
    return render(request, "training_app/run.html", _run_context(request, run_id))


@login_required
@require_safe
def run_progress(request, run_id):
    """The live part of the run page, polled every two seconds while the run is active."""
    _viewer(request)
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
    _viewer(request)
    return render(request, "training_app/versions.html", {"versions": model_versions_list()})


@login_required
@require_safe
def version_detail(request, version_id):
    """The comparison page: the version's latest evaluation against its reference, plotted."""
    _viewer(request)
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
    return render(
        request,
        "training_app/version.html",
        {
            "version": version,
            "evaluation": evaluation,
            "evaluations": model_version_evaluations(version=version),
            "chart": chart,
            "rows": rows,
            "lower_is_better": {"eval_loss", "perplexity"},
        },
    )


@login_required
@require_POST
def channel_try(request, name):
    """The channel page's "Try it" form: the same call as `POST /api/channels/{name}/generate/`,
    so the answer is recorded and routed into review like any live traffic."""
    channel = get_object_or_404(Channel, name=name)
    try:
        output, _answer = channel_generate(
            user=request.user, channel=channel, prompt=request.POST.get("prompt", "")
        )
    except ApplicationError as exc:
        if exc.status_code == 403:
            raise PermissionDenied(exc.message) from exc
        messages.error(request, exc.message)
        return redirect("training:channel", name=channel.name)
    # Redirected, so reloading the answer page does not ask the model (and record) again.
    return redirect("training:channel-answer", name=channel.name, output_id=output.pk)


@login_required
@require_safe
def channel_answer(request, name, output_id):
    """One answer given through the channel, and where review stands with it."""
    _viewer(request)
    output = get_object_or_404(
        Output.objects.select_related("queue"), pk=output_id, source=f"channel:{name}"
    )
    question = output.input[-1]["content"] if isinstance(output.input, list) else output.input
    return render(
        request,
        "training_app/channel_answer.html",
        {"channel_name": name, "output": output, "question": question},
    )
