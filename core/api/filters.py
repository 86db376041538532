"""Query filters every app's API shares: ids that are 400s when out of range, and UTC times."""

from datetime import UTC

import django_filters
from django import forms
from django.utils import timezone

# The range of a 64-bit database integer: a larger id in a query string is a 400, not an
# overflow inside the database driver.
DB_INT_MAX = 2**63 - 1


class IdFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", -DB_INT_MAX)
        kwargs.setdefault("max_value", DB_INT_MAX)
        super().__init__(*args, **kwargs)


class UtcDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 time, turned into UTC: PostgreSQL refuses offsets beyond ±15:59, which
    ISO 8601 allows (a 500 otherwise), and a time that leaves the calendar is a 400."""

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None or timezone.is_naive(moment):
            return moment
        try:
            return moment.astimezone(UTC)
        except OverflowError as error:
            raise forms.ValidationError("Out of range.", code="invalid") from error


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField
