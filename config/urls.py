from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("reviews.api.urls")),
    path("api/", include("datasets_app.api.urls")),
    path("api/", include("training_app.api.urls")),
    path("datasets/", include("datasets_app.urls")),
    path("training/", include("training_app.urls")),
    path("", include("reviews.urls")),
]

# JSON under /api/, HTML pages elsewhere (core/http.py).
handler400 = "core.http.bad_request"
handler404 = "core.http.page_not_found"
handler500 = "core.http.server_error"
