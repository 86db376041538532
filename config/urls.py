from django.contrib import admin
from django.http import Http404, HttpResponsePermanentRedirect
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

import core.urls
import governance.urls
import monitoring.urls
import serving.urls
import training_app.urls

# The `training:` page namespace predates the split into apps; its URL names (and the URLs
# themselves) stay as they were, composed here from each app's pages.
TRAINING_PAGES = [
    *training_app.urls.urlpatterns,
    *governance.urls.urlpatterns,
    *serving.urls.urlpatterns,
    *core.urls.urlpatterns,
    *monitoring.urls.urlpatterns,
]

# Admin pages of models that moved to their own app (issue 16) answered at their old address
# too: bookmarks keep working. The admin's address carries the app's label.
MOVED_ADMIN = {
    ("reviews", "auditevent"): "core",
    **{
        ("training_app", model): "governance"
        for model in ("channel", "regressioncase", "signoffrequest", "approval", "deployment")
    },
    **{
        ("training_app", model): "monitoring"
        for model in ("channelmonitoring", "driftalert", "webhook", "webhookdelivery")
    },
}


class MovedAdminModel:
    """`app_label/model` of an admin page whose model moved to another app."""

    regex = "|".join(f"{app}/{model}" for app, model in sorted(MOVED_ADMIN))

    def to_python(self, value: str) -> tuple[str, str]:
        app_label, model = value.split("/")
        return app_label, model

    def to_url(self, value: tuple[str, str]) -> str:
        return "/".join(value)


register_converter(MovedAdminModel, "moved_admin_model")


def moved_admin_redirect(request, old, rest=""):
    if old not in MOVED_ADMIN:
        raise Http404("No such admin page.")
    query = request.META.get("QUERY_STRING", "")
    target = f"/admin/{MOVED_ADMIN[old]}/{old[1]}/{rest}" + (f"?{query}" if query else "")
    return HttpResponsePermanentRedirect(target)


urlpatterns = [
    path("admin/<moved_admin_model:old>/", moved_admin_redirect),
    path("admin/<moved_admin_model:old>/<path:rest>", moved_admin_redirect),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("reviews.api.urls")),
    path("api/", include("core.api.urls")),
    path("api/", include("datasets_app.api.urls")),
    path("api/", include("training_app.api.urls")),
    path("api/", include("governance.api.urls")),
    path("api/", include("serving.api.urls")),
    path("api/", include("monitoring.api.urls")),
    path("datasets/", include("datasets_app.urls")),
    path("training/", include((TRAINING_PAGES, "training"))),
    path("", include("reviews.urls")),
]

# JSON under /api/, HTML pages elsewhere (core/http.py).
handler400 = "core.http.bad_request"
handler404 = "core.http.page_not_found"
handler500 = "core.http.server_error"
