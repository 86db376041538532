"""Pages that ask a channel's live version: "Try it" (answered in the background) and one
answer with where review stands with it."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from core.errors import ApplicationError
from core.permissions import can
from governance.models import Channel
from reviews.models import Output
from serving.models import ChannelTry
from serving.services.channel_try import channel_try_create
from training_app.views import require_training_viewer


@login_required
@require_POST
def channel_try(request, name):
    """The channel page's "Try it" form: queues the question for the jobs worker, which calls the
    same service as `POST /api/channels/{name}/generate/` (the answer is recorded and routed into
    review like any live traffic). Answers at once with a fragment that polls for the answer."""
    channel = get_object_or_404(Channel, name=name)
    try:
        job = channel_try_create(
            user=request.user, channel=channel, prompt=request.POST.get("prompt", "")
        )
    except ApplicationError as exc:
        if exc.status_code == 403:
            raise PermissionDenied(exc.message) from exc
        if request.htmx:
            return render(
                request,
                "training_app/_channel_try.html",
                {"channel": channel, "job": None, "refusal": exc},
            )
        messages.error(request, exc.message)
        return redirect("training:channel", name=channel.name)
    if request.htmx:
        return render(
            request,
            "training_app/_channel_try.html",
            {"channel": channel, "job": job, "refusal": None},
        )
    # Redirected, so reloading the page does not ask the model (and record) again.
    return redirect("training:channel-try-job", name=channel.name, try_id=job.pk)


@login_required
@require_safe
def channel_try_job(request, name, try_id):
    """One question asked through "Try it": busy while the worker answers (polled by htmx), then
    the answer and where review stands with it. The asker's own questions only."""
    channel = get_object_or_404(Channel, name=name)
    if not can(request.user, "channel.generate"):
        raise PermissionDenied("Only ML engineers, deployers and admins call channels.")
    job = get_object_or_404(
        ChannelTry.objects.select_related("version", "output__queue"),
        pk=try_id,
        channel=channel,
        user=request.user,
    )
    template = "training_app/_channel_try.html" if request.htmx else "training_app/channel_try.html"
    return render(request, template, {"channel": channel, "job": job, "refusal": None})


@login_required
@require_safe
def channel_answer(request, name, output_id):
    """One answer given through the channel, and where review stands with it."""
    require_training_viewer(request)
    output = get_object_or_404(
        Output.objects.select_related("queue"), pk=output_id, source=f"channel:{name}"
    )
    question = output.input[-1]["content"] if isinstance(output.input, list) else output.input
    return render(
        request,
        "training_app/channel_answer.html",
        {"channel_name": name, "output": output, "question": question},
    )
