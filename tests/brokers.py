"""The training actors bound to a real Redis for one test, then given back to the stub broker."""

from collections.abc import Iterator
from contextlib import contextmanager

from django_dramatiq.middleware import DbConnectionsMiddleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage


@contextmanager
def training_actors_on(redis_url: str) -> Iterator[RedisBroker]:
    from training_app.tasks import evaluate_model_version, train_model_version

    broker = RedisBroker(url=redis_url)
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(DbConnectionsMiddleware())
    actors = (train_model_version, evaluate_model_version)
    previous = [actor.broker for actor in actors]
    for actor in actors:
        actor.broker = broker
        broker.declare_actor(actor)
    try:
        yield broker
    finally:
        for actor, old in zip(actors, previous, strict=True):
            actor.broker = old
        broker.close()
