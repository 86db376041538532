"""Pages: the queues home, the reviewer workbench, "My reviews" and undo.

Thin views over the review loop's services and selectors. The workbench answers htmx requests
with its panel only (the next item replaces the last one without a page load) and plain
requests with the whole page. A domain error never drops what the reviewer typed: a refused
decision keeps the item and the text; a lost lease moves on and hands the text back.
"""

import contextlib
import uuid
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from core.errors import ApplicationError, Conflict, NotFound, PermissionRefused, ValidationFailed
from reviews import selectors, services
from reviews.forms import DecisionForm
from reviews.home_selectors import home_sections
from reviews.models import Lease, Queue, Review
from reviews.roles import can_work_queue

WORKBENCH_PAGE = "reviews/workbench.html"
WORKBENCH_PANEL = "reviews/_workbench.html"


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Where each role lands: its own sections (an approver's inbox, a deployer's releases,
    an auditor's chain, an ML engineer's runs), and the review queues."""
    queues = selectors.queues_for(user=request.user)
    counts = selectors.queue_counts(queues=queues, user=request.user)
    rows = [
        {
            "queue": queue,
            "counts": counts[queue.pk],
            "can_work": queue.is_active and can_work_queue(request.user, queue),
        }
        for queue in queues
    ]
    return render(
        request,
        "reviews/home.html",
        {
            "rows": rows,
            "roles": selectors.roles_of(request.user),
            "works_queues": any(row["can_work"] for row in rows),
            **home_sections(user=request.user),
        },
    )


@dataclass(frozen=True)
class KeptText:
    """What the reviewer had typed when their decision could not be recorded."""

    corrected_output: str
    reason: str

    @classmethod
    def from_post(cls, form: DecisionForm) -> "KeptText | None":
        decision = form.data.get("decision", "")
        corrected = form.data.get("corrected_output", "") if decision == "correct" else ""
        reason = form.data.get("reason", "")
        if not corrected.strip() and not reason.strip():
            return None
        return cls(corrected_output=corrected, reason=reason)


def _forbidden(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "reviews/forbidden.html", {"message": message}, status=403)


def _next_lease(queue: Queue, user: AbstractBaseUser) -> Lease | None:
    """The item to show next: the one the user already holds in this queue, else a new claim."""
    return selectors.lease_held(user=user, queue=queue) or services.queue_claim_next(
        queue=queue, user=user
    )


def _render_workbench(
    request: HttpRequest,
    queue: Queue,
    lease: Lease | None,
    *,
    status: int = 200,
    notice: str = "",
    kept: KeptText | None = None,
    error: ApplicationError | None = None,
    form: DecisionForm | None = None,
    last_review: Review | None = None,
) -> HttpResponse:
    context: dict = {
        "queue": queue,
        "lease": lease,
        "now": timezone.now(),
        "notice": notice,
        "kept": kept,
        "error": error,
        "form": form,
        "last_review": last_review,
        "is_escalation": queue.kind == Queue.Kind.ESCALATION,
        "guidelines": selectors.guidelines_current(queue=queue),
        "origin_guidelines": None,
    }
    if lease is not None:
        output = lease.output
        context["output"] = output
        context.update(_editor_state(output.output_text, form, error))
        context["earlier_reviews"] = (
            selectors.reviews_for_lead(output=output) if context["is_escalation"] else []
        )
        if context["is_escalation"]:
            context["origin_guidelines"] = selectors.guidelines_escalated_from(
                output=output, reviews=context["earlier_reviews"]
            )
    else:
        queues = [q for q in selectors.queues_for(user=request.user) if q.pk != queue.pk]
        queues = [q for q in queues if can_work_queue(request.user, q)]
        counts = selectors.queue_counts(queues=queues, user=request.user)
        context["other_queues"] = [{"queue": q, "counts": counts[q.pk]} for q in queues]
    template = WORKBENCH_PANEL if request.htmx else WORKBENCH_PAGE
    return render(request, template, context, status=status)


PANEL_OF_FIELD = {"corrected_output": "editor", "reason": "reason"}


def _editor_state(
    original: str, form: DecisionForm | None, error: ApplicationError | None
) -> dict[str, str]:
    """Which panel is open and what it holds: after a refused decision, exactly what the
    reviewer had typed, with the panel of the field that was refused."""
    typed = form.data if form is not None else {}
    decision = typed.get("decision", "")
    return {
        "editor_text": typed.get("corrected_output", original) if typed else original,
        "reason_text": typed.get("reason", ""),
        "comment_text": typed.get("comment", ""),
        "open_panel": PANEL_OF_FIELD.get(error.field or "", "") if error is not None else "",
        "reason_decision": decision if decision in ("reject", "escalate") else "reject",
    }


@login_required
@require_GET
def queue_work(request: HttpRequest, queue_id: int) -> HttpResponse:
    """The workbench: resumes the item the user holds in this queue, else claims the next.

    Claiming on GET is deliberate: opening the workbench is the reviewer asking for work, and
    resuming a held lease makes reloading it safe."""
    queue = get_object_or_404(Queue, pk=queue_id, is_active=True)
    if not can_work_queue(request.user, queue):
        return _forbidden(request, f"You may not work the queue “{queue.name}”.")
    return _render_workbench(request, queue, _next_lease(queue, request.user))


def _own_lease(request: HttpRequest, lease_id: uuid.UUID) -> Lease | HttpResponse:
    lease = selectors.lease_with_item(lease_id=lease_id)
    if lease is None:
        raise Http404("No such lease.")
    if lease.reviewer_id != request.user.pk or not can_work_queue(request.user, lease.queue):
        return _forbidden(request, "This item is leased to someone else.")
    return lease


@login_required
@require_POST
def lease_decide(request: HttpRequest, lease_id: uuid.UUID) -> HttpResponse:
    """Record a decision, then show the next item of the same queue."""
    lease = _own_lease(request, lease_id)
    if isinstance(lease, HttpResponse):
        return lease
    queue = lease.queue
    form = DecisionForm(request.POST)
    if not form.is_valid():
        error = ValidationFailed("Choose approve, correct, reject or escalate.", field="decision")
        return _render_workbench(request, queue, lease, status=400, error=error, form=form)
    try:
        review = services.review_submit(
            lease_id=lease.pk, user=request.user, **form.service_arguments()
        )
    except ValidationFailed as error:
        # Same item, same text: the reviewer fixes what was refused and submits again.
        return _render_workbench(request, queue, lease, status=400, error=error, form=form)
    except Conflict as error:
        # Lease lost or item resolved by someone else: nothing to retry on this item. A lease
        # still live on a decided item is given back, so that it is not offered again.
        with contextlib.suppress(ApplicationError):
            services.lease_release(lease_id=lease.pk, user=request.user)
        notice = f"Your decision on item #{lease.output_id} was not recorded: {error.message}"
        return _render_workbench(
            request,
            queue,
            _next_lease(queue, request.user),
            status=409,
            notice=notice,
            kept=KeptText.from_post(form),
        )
    except PermissionRefused as error:
        return _forbidden(request, error.message)
    return _render_workbench(request, queue, _next_lease(queue, request.user), last_review=review)


@login_required
@require_POST
def lease_skip(request: HttpRequest, lease_id: uuid.UUID) -> HttpResponse:
    """Give the item back and show another one."""
    lease = _own_lease(request, lease_id)
    if isinstance(lease, HttpResponse):
        return lease
    queue = lease.queue
    # Claim before releasing: while we still hold the skipped item the claim cannot hand it
    # straight back (it is the most urgent item the reviewer has not decided).
    next_lease = services.queue_claim_next(queue=queue, user=request.user)
    # A lease that already lapsed needs no release: the item is back in the queue either way.
    with contextlib.suppress(Conflict):
        services.lease_release(lease_id=lease.pk, user=request.user)
    notice = f"Skipped item #{lease.output_id}; it is back in the queue."
    return _render_workbench(request, queue, next_lease, notice=notice)


@login_required
@require_POST
def lease_renew(request: HttpRequest, lease_id: uuid.UUID) -> JsonResponse:
    """Extend the lease while the reviewer is at work (the workbench calls it by itself)."""
    try:
        lease = services.lease_renew(lease_id=lease_id, user=request.user)
    except ApplicationError as error:
        return JsonResponse({"detail": error.message, "code": error.code}, status=error.status_code)
    left = (lease.expires_at - timezone.now()).total_seconds()
    return JsonResponse(
        {"expires_at": lease.expires_at.isoformat(), "seconds_left": max(0, int(left))}
    )


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@login_required
@require_GET
def my_reviews(request: HttpRequest) -> HttpResponse:
    reviews = selectors.reviews_by(user=request.user, limit=50)
    undoable = next((r for r in reviews if r.undone_at is None), None)
    return render(request, "reviews/my_reviews.html", {"reviews": reviews, "undoable": undoable})


@login_required
@require_POST
def review_undo(request: HttpRequest, review_id: int) -> HttpResponse:
    """Take back the last decision and reopen its item in the workbench."""
    try:
        lease = services.review_undo(review_id=review_id, user=request.user)
    except (NotFound, PermissionRefused, Conflict) as error:
        messages.error(request, f"Could not undo: {error.message}")
        return redirect("my-reviews")
    # Undo from the workbench: the item shown there is given back, so that it is not locked
    # away while the reviewer decides the reopened one.
    shown = _uuid_or_none(request.POST.get("release_lease", ""))
    if shown is not None:
        # Already gone, or not theirs: then there is nothing to give back.
        with contextlib.suppress(NotFound, PermissionRefused, Conflict):
            services.lease_release(lease_id=shown, user=request.user)
    messages.success(request, f"Decision undone: item #{lease.output_id} is yours to decide again.")
    return redirect("queue-work", queue_id=lease.queue_id)
