from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "reviews"
    verbose_name = "Review loop"

    @property
    def role_permissions(self) -> dict[str, list[str]]:
        from reviews.roles import REVIEWS_ROLE_PERMISSIONS

        return REVIEWS_ROLE_PERMISSIONS
