import factory
from django.contrib.auth import get_user_model

from reviews.models import Output, Queue


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-for-tests")


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Queue
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"queue-{n}")
    required_reviews = 1
    lease_seconds = 300


class OutputFactory(factory.django.DjangoModelFactory):
    """Direct rows for claim/decision tests; ingest tests go through the service."""

    class Meta:
        model = Output

    source = "tests"
    external_id = factory.Sequence(lambda n: f"ext-{n}")
    model_name = "tiny-model"
    model_version = "v1"
    input = "What is the deductible?"
    output_text = "The deductible is $500."
    confidence = 0.5
    queue = factory.SubFactory(QueueFactory)


def output_payload(n: int = 0, **overrides):
    payload = {
        "external_id": f"p-{n}",
        "source": "api-tests",
        "model_name": "tiny-model",
        "model_version": "v1",
        "input": [{"role": "user", "content": f"Question {n}?"}],
        "output": f"Answer {n}.",
        "confidence": 0.9,
        "metadata": {"channel": "chat"},
        "tags": ["billing"],
    }
    payload.update(overrides)
    return payload
