from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo: its data, `seed_demo` and `run_demo` (which starts every process of `make
    demo`). The top layer: it may import any app."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "demo"
    verbose_name = "Demo"
