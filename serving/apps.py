from django.apps import AppConfig


class ServingConfig(AppConfig):
    """Answers from a channel's live version: the serving backends (the embedded model server,
    or OpenAI-compatible engines), generate and the "Try it" jobs. The web process only talks
    HTTP to them, so it never imports torch."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "serving"
    verbose_name = "Serving"

    def ready(self) -> None:
        from core.maintenance import maintenance_step
        from governance.services.deployments import ServingHook, deployment_backend_register
        from governance.views import channel_page_extra
        from serving.services.channel_try import channel_tries_sweep, channel_try_page_extras
        from serving.services.engines import (
            engine_adapters_sync,
            serving_adapter_prepare,
            serving_adapter_release,
        )

        channel_page_extra(channel_try_page_extras)

        maintenance_step(
            key="channel_tries", order=40, label='"Try it" questions', run=channel_tries_sweep
        )
        # Deploy, rollback and retire load and unload adapters on the engines.
        deployment_backend_register(
            ServingHook(
                key="serving", prepare=serving_adapter_prepare, release=serving_adapter_release
            )
        )
        maintenance_step(
            key="engine_adapters", order=45, label="engine adapters", run=engine_adapters_sync
        )
