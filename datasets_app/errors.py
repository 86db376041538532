"""Domain errors of the datasets app; core/http.py maps them to HTTP answers."""

from core.errors import Conflict, NotFound, ValidationFailed


class InvalidDatasetRequest(ValidationFailed):
    """A filter or pipeline setting is wrong; `field` names it."""

    code = "invalid_dataset_request"


class DatasetVersionNotFound(NotFound):
    code = "dataset_version_not_found"


class ExampleNotFound(NotFound):
    code = "example_not_found"


class DatasetNotReady(Conflict):
    code = "dataset_not_ready"


class ExampleInUse(Conflict):
    """The example belongs to a built version, which is immutable."""

    code = "example_in_use"


class DatasetImmutable(Conflict):
    code = "dataset_immutable"


class SourceChanged(Conflict):
    """An output a build used changed (a review was undone) while the version was being built."""

    code = "source_changed"
