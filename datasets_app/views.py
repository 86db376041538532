"""Pages: the versions with their plots, one version with samples, the build form."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_safe

from core.errors import ApplicationError
from core.permissions import can

from . import selectors, services, svg
from .errors import DatasetVersionNotFound
from .forms import DatasetBuildForm


def _require(request: HttpRequest, *, build: bool = False) -> None:
    allowed = (
        selectors.can_build_datasets(request.user)
        if build
        else selectors.can_read_datasets(request.user)
    )
    if not allowed:
        raise PermissionDenied("Your roles do not allow this.")


@login_required
@require_safe
def version_list(request: HttpRequest) -> HttpResponse:
    _require(request)
    versions = list(selectors.dataset_versions_list()[:100])
    rows = [
        {
            "version": v,
            "funnel": svg.funnel_svg(v.counts, width=180, compact=True) if v.is_ready else "",
        }
        for v in versions
    ]
    latest = next((v for v in versions if v.is_ready), None)
    return render(
        request,
        "datasets_app/list.html",
        {
            "rows": rows,
            "latest": latest,
            "funnel": svg.funnel_svg(latest.counts) if latest else "",
            "balance": svg.balance_svg(latest.counts.get("labels", {})) if latest else "",
            "can_build": selectors.can_build_datasets(request.user),
        },
    )


def _version(pk: int):
    try:
        return selectors.dataset_version_get(version_id=pk)
    except DatasetVersionNotFound as exc:
        raise Http404(exc.message) from exc


def _build_context(request: HttpRequest, version) -> dict:
    return {
        "version": version,
        "build": selectors.dataset_build_progress(version=version),
        "can_train": version.is_ready and can(request.user, "training.launch"),
        "can_build": selectors.can_build_datasets(request.user),
        "polled": False,
    }


@login_required
@require_safe
def version_build_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of the version page, polled every two seconds while the build runs."""
    _require(request)
    version = _version(pk)
    context = {**_build_context(request, version), "polled": True}
    response = render(request, "datasets_app/_build_progress.html", context)
    if request.headers.get("HX-Request") and not context["build"].is_active:
        # The build ended while the page was open: reload it whole, since the quality report,
        # examples, plots and exports are drawn only for a finished version.
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_safe
def version_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _require(request)
    version = _version(pk)
    samples = {}
    diff = None
    if version.is_ready:
        samples = {
            split: selectors.dataset_version_sample(version=version, split=split, limit=5)
            for split in selectors.SPLITS
        }
        if version.parent and version.parent.is_ready:
            diff = selectors.dataset_version_diff(version=version, other=version.parent)
    counts = version.counts or {}
    return render(
        request,
        "datasets_app/detail.html",
        {
            **_build_context(request, version),
            "counts": counts,
            "steps": counts.get("steps", []),
            "pii": sorted((counts.get("pii") or {}).items()),
            "balance_rows": _balance_rows(counts.get("balance") or {}),
            "samples": samples,
            "diff": diff.as_dict(limit=20) if diff else None,
            "funnel": svg.funnel_svg(counts) if version.is_ready else "",
            "balance": svg.balance_svg(counts.get("labels", {})) if version.is_ready else "",
            "others": selectors.dataset_versions_list().exclude(pk=version.pk)[:50],
            "formats": selectors.EXPORT_FORMATS,
        },
    )


def _balance_rows(balance: dict) -> list[tuple[str, str, int, int, bool]]:
    rows = []
    capped = balance.get("caps", {})
    for dim, values in sorted(balance.get("before", {}).items()):
        for value, before in sorted(values.items()):
            after = balance.get("after", {}).get(dim, {}).get(value, 0)
            rows.append((dim, value, before, after, dim in capped))
    return rows


@login_required
def version_build(request: HttpRequest) -> HttpResponse:
    _require(request, build=True)
    form = DatasetBuildForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            version, _ = services.dataset_version_start(
                user=request.user,
                name=form.cleaned_data["name"],
                run=form.cleaned_data["run"],
                **form.options(),
            )
        except ApplicationError as exc:
            field = exc.field if exc.field in form.fields else None
            form.add_error(field, exc.message)
        else:
            return redirect("datasets:detail", pk=version.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "datasets_app/build.html", {"form": form}, status=status)
