"""Pages. The reviewer workbench builds on these services; for now, the home page."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from . import selectors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    queues = selectors.queues_for(user=request.user)
    counts = selectors.queue_counts(queues=queues, user=request.user)
    rows = [{"queue": queue, "counts": counts[queue.pk]} for queue in queues]
    return render(
        request,
        "reviews/home.html",
        {"rows": rows, "roles": selectors.roles_of(request.user)},
    )
