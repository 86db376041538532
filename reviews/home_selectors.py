"""The home page's sections, one per role the user holds: reviewers keep their queues (the page
itself), and each app above reviews adds what waits for its roles there. Those apps register
a section provider in their AppConfig.ready(), so reviews never imports them (the layering in
pyproject.toml's import-linter contract)."""

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

# A provider returns its sections by name, each None when it is not for this user.
HomeSectionProvider = Callable[..., dict[str, Any]]

_providers: list[HomeSectionProvider] = []


def home_section_provider(provider: HomeSectionProvider) -> HomeSectionProvider:
    """Register `provider(user=...)`; registering the same one twice keeps one."""
    if provider not in _providers:
        _providers.append(provider)
    return provider


def home_sections(*, user: AbstractBaseUser) -> dict[str, Any]:
    """Every registered provider's sections; `has_sections` says whether any is for this
    user."""
    sections: dict[str, Any] = {}
    for provider in _providers:
        sections.update(provider(user=user))
    sections["has_sections"] = any(section is not None for section in sections.values())
    return sections
