from django.apps import AppConfig


class ServingConfig(AppConfig):
    """Answers from a channel's live version: the model server, its client, generate and the
    "Try it" jobs. The web process only talks HTTP to the model server, so it never imports
    torch."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "serving"
    verbose_name = "Serving"

    def ready(self) -> None:
        from core.maintenance import maintenance_step
        from governance.views import channel_page_extra
        from serving.services.channel_try import channel_tries_sweep, channel_try_page_extras

        channel_page_extra(channel_try_page_extras)

        maintenance_step(
            key="channel_tries", order=40, label='"Try it" questions', run=channel_tries_sweep
        )
