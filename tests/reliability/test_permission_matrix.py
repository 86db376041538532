"""Every URL pattern the project serves x every role: who is let through and who is refused.

The table below is the expectation. Patterns come from Django's resolver, so an endpoint or
page added without a row here fails `test_every_url_pattern_has_a_rule`, and a row whose
allow/deny does not match what the server does fails `test_every_role_gets_what_the_table_says`.

"Allowed" means the role gets past the permission check: any answer but 401, 403 or a
redirect to the login page (a 400 for an empty body, 404 or 409 are fine). "Refused" means 403
(401 or a redirect to the login page for anonymous callers). Nothing may answer 5xx.
"""

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from reviews.services import queue_claim_next, review_submit

from ..factories import OutputFactory

pytestmark = pytest.mark.django_db

REVIEWER, LEAD, ML, APPROVER, DEPLOYER, AUDITOR, ADMIN = (
    "reviewer",
    "lead",
    "ml_engineer",
    "approver",
    "deployer",
    "auditor",
    "admin",
)
OUTSIDER, ANONYMOUS = "outsider", "anonymous"
ROLES = (REVIEWER, LEAD, ML, APPROVER, DEPLOYER, AUDITOR, ADMIN)
WHO = (*ROLES, OUTSIDER, ANONYMOUS)

ANY_ROLE = frozenset(ROLES)
SIGNED_IN = frozenset((*ROLES, OUTSIDER))
PUBLIC = frozenset(WHO)
WORKERS = frozenset({REVIEWER, LEAD, ADMIN})
MANAGERS = frozenset({LEAD, ADMIN})
OVERSEERS = frozenset({LEAD, ML, APPROVER, AUDITOR, ADMIN})
INGESTERS = frozenset({ML, ADMIN})
AUDIT = frozenset({AUDITOR, ADMIN})
ENGINEERS = frozenset({ML, ADMIN})


def _route(world, who):
    return {}


def _queue(world, who):
    return {"pk": world.queue.pk}


def _output(world, who):
    return {"pk": world.outputs[0].pk}


def _own_lease(world, who):
    """A lease the caller holds where the caller may hold one (else someone else's), so that
    an object-level refusal is not mistaken for a role-level one."""
    person = world.people.get(who)
    if who in WORKERS:
        OutputFactory(queue=world.queue)
        lease = queue_claim_next(queue=world.queue, user=person)
        return {"pk": lease.pk}
    return {"pk": world.lease.pk}


def _own_review(world, who):
    if who in WORKERS:
        OutputFactory(queue=world.queue)
        lease = queue_claim_next(queue=world.queue, user=world.people[who])
        review = review_submit(lease_id=lease.pk, user=world.people[who], decision="approve")
        return {"pk": review.pk}
    return {"pk": world.review.pk}


def _rule(world, who):
    return {"pk": world.rule.pk}


def _dataset(world, who):
    return {"pk": world.dataset.pk}


def _dataset_diff(world, who):
    return {"pk": world.dataset.pk, "other_id": world.dataset.pk}


def _run(world, who):
    return {"run_id": world.version.run_id}


def _version(world, who):
    return {"version_id": world.version.pk}


def _version_file(world, who):
    return {"version_id": world.version.pk, "filename": "adapter_config.json"}


def _channel(world, who):
    return {"name": world.channel.name}


def _channel_answer(world, who):
    return {"name": world.channel.name, "output_id": world.outputs[0].pk}


def _channel_try(world, who):
    """A question the caller asked where the caller may ask (others' are not found), else
    someone else's: the role is refused before the question is looked up."""
    from serving.models import ChannelTry

    asker = world.people[who] if who in CHANNEL_CALLERS else world.people[ML]
    job = ChannelTry.objects.create(
        channel=world.channel, version=world.version, user=asker, question="hi"
    )
    return {"name": world.channel.name, "try_id": job.pk}


def _alert(world, who):
    return {"pk": world.alert.pk}


def _example(world, who):
    return {"example_id": world.dataset.members.first().example_id}


def _queue_work(world, who):
    return {"queue_id": world.queue.pk}


def _page_lease(world, who):
    return {"lease_id": _own_lease(world, who)["pk"]}


def _page_review(world, who):
    return {"review_id": _own_review(world, who)["pk"]}


def _signoff(world, who):
    return {"pk": world.signoff.pk}


ENGINEERING_READERS = frozenset({ML, APPROVER, DEPLOYER, AUDITOR, ADMIN})
DATASET_READERS = frozenset({ML, APPROVER, AUDITOR, ADMIN})
RULE_READERS = frozenset({LEAD, ML, AUDITOR, ADMIN})
CHANNEL_CALLERS = frozenset({ML, DEPLOYER, ADMIN})
DEPLOYERS = frozenset({DEPLOYER})  # deploying is the deployer's alone, admins included out
RETIRERS = frozenset({DEPLOYER, ADMIN})
# The channel policy's approver role decides; admins are not approvers by default.
APPROVERS = frozenset({APPROVER})
ADMINS = frozenset({ADMIN})

# "namespace:name" -> (path kwargs, {method: roles let through}). Admin and account pages are
# covered by PREFIX_RULES; everything else must be listed.
TABLE = {
    "schema": (_route, {"GET": PUBLIC}),
    "swagger-ui": (_route, {"GET": PUBLIC}),
    "api-outputs": (_route, {"GET": OVERSEERS, "POST": INGESTERS}),
    "api-output": (_output, {"GET": OVERSEERS}),
    "api-output-gold": (_output, {"POST": MANAGERS}),
    "api-queues": (_route, {"GET": ANY_ROLE, "POST": MANAGERS}),
    "api-queue": (_queue, {"GET": ANY_ROLE, "PATCH": MANAGERS}),
    "api-queue-claim": (_queue, {"POST": WORKERS}),
    "api-queue-agreement": (_queue, {"GET": RULE_READERS}),
    "api-lease-renew": (_own_lease, {"POST": WORKERS}),
    "api-lease-release": (_own_lease, {"POST": WORKERS}),
    "api-reviews": (_route, {"GET": ANY_ROLE, "POST": WORKERS}),
    "api-review-undo": (_own_review, {"POST": WORKERS}),
    "api-routing-rules": (_route, {"GET": RULE_READERS, "POST": MANAGERS}),
    "api-routing-rule": (_rule, {"GET": RULE_READERS, "PATCH": MANAGERS, "DELETE": MANAGERS}),
    "api-audit": (_route, {"GET": AUDIT}),
    "api-audit-verify": (_route, {"GET": AUDIT}),
    "api-audit-export": (_route, {"GET": AUDIT}),
    "api-datasets": (_route, {"GET": DATASET_READERS, "POST": ENGINEERS}),
    "api-dataset": (_dataset, {"GET": DATASET_READERS}),
    "api-dataset-export": (_dataset, {"GET": DATASET_READERS}),
    "api-dataset-diff": (_dataset_diff, {"GET": DATASET_READERS}),
    "api-training-runs": (_route, {"GET": ENGINEERING_READERS, "POST": ENGINEERS}),
    "api-training-run": (_run, {"GET": ENGINEERING_READERS}),
    "api-training-run-cancel": (_run, {"POST": ENGINEERS}),
    "api-model-versions": (_route, {"GET": ENGINEERING_READERS}),
    "api-model-version": (_version, {"GET": ENGINEERING_READERS}),
    "api-signoff-request-create": (_version, {"POST": ENGINEERS}),
    "api-signoff-request": (_signoff, {"GET": ENGINEERING_READERS}),
    "api-signoff-decide": (_signoff, {"POST": APPROVERS}),
    "api-model-version-retire": (_version, {"POST": RETIRERS}),
    "api-model-version-file": (_version_file, {"GET": ENGINEERING_READERS}),
    "api-compliance": (_version, {"GET": ENGINEERING_READERS}),
    "api-compliance-archive": (_version, {"GET": ENGINEERING_READERS}),
    "api-channels": (_route, {"GET": ENGINEERING_READERS}),
    "api-channel": (_channel, {"GET": ENGINEERING_READERS}),
    "api-channel-history": (_channel, {"GET": ENGINEERING_READERS}),
    "api-channel-deploy": (_channel, {"POST": DEPLOYERS}),
    "api-channel-rollback": (_channel, {"POST": DEPLOYERS}),
    "api-channel-generate": (_channel, {"POST": CHANNEL_CALLERS}),
    "api-monitoring": (_route, {"GET": ENGINEERING_READERS}),
    "api-monitoring-version": (_version, {"GET": ENGINEERING_READERS}),
    "api-monitoring-channel-settings": (_channel, {"PUT": ADMINS}),
    "api-drift-alerts": (_route, {"GET": ENGINEERING_READERS}),
    "api-drift-alert-acknowledge": (_alert, {"POST": ENGINEERS}),
    "api-model-version-retrain": (_version, {"POST": ENGINEERS}),
    "api-webhooks": (_route, {"GET": ADMINS, "POST": ADMINS}),
    "api-webhook-deliveries": (_route, {"GET": ADMINS}),
    "datasets:list": (_route, {"GET": DATASET_READERS}),
    "datasets:build": (_route, {"GET": ENGINEERS, "POST": ENGINEERS}),
    "datasets:detail": (_dataset, {"GET": DATASET_READERS}),
    "datasets:progress": (_dataset, {"GET": DATASET_READERS}),
    "training:index": (_route, {"GET": ENGINEERING_READERS}),
    "training:launch": (_route, {"GET": ENGINEERS, "POST": ENGINEERS}),
    "training:launch-estimate": (_route, {"GET": ENGINEERS}),
    "training:run": (_run, {"GET": ENGINEERING_READERS}),
    "training:run-progress": (_run, {"GET": ENGINEERING_READERS}),
    "training:run-cancel": (_run, {"POST": ENGINEERS}),
    "training:versions": (_route, {"GET": ENGINEERING_READERS}),
    "training:version": (_version, {"GET": ENGINEERING_READERS}),
    "training:version-evaluation": (_version, {"GET": ENGINEERING_READERS}),
    "training:governance": (_version, {"GET": ENGINEERING_READERS}),
    "training:signoff-new": (_version, {"POST": ENGINEERS}),
    "training:retire": (_version, {"POST": RETIRERS}),
    "training:compliance": (_version, {"GET": ENGINEERING_READERS}),
    "training:compliance-archive": (_version, {"GET": ENGINEERING_READERS}),
    "training:lineage": (_version, {"GET": ENGINEERING_READERS}),
    "training:example-lineage": (_example, {"GET": ENGINEERING_READERS}),
    "training:signoff": (_signoff, {"GET": ENGINEERING_READERS}),
    "training:signoff-comparisons": (_signoff, {"GET": ENGINEERING_READERS}),
    "training:signoff-decide": (_signoff, {"POST": APPROVERS}),
    "training:channels": (_route, {"GET": ENGINEERING_READERS}),
    "training:channel": (_channel, {"GET": ENGINEERING_READERS}),
    "training:channel-deploy": (_channel, {"POST": DEPLOYERS}),
    "training:channel-try": (_channel, {"POST": CHANNEL_CALLERS}),
    "training:channel-try-job": (_channel_try, {"GET": CHANNEL_CALLERS}),
    "training:channel-answer": (_channel_answer, {"GET": ENGINEERING_READERS}),
    "training:channel-rollback": (_channel, {"POST": DEPLOYERS}),
    "training:audit": (_route, {"GET": AUDIT}),
    "training:audit-verify": (_route, {"GET": AUDIT}),
    "training:monitoring": (_route, {"GET": ENGINEERING_READERS}),
    "training:monitoring-version": (_version, {"GET": ENGINEERING_READERS}),
    "training:monitoring-retrain": (_version, {"GET": ENGINEERS, "POST": ENGINEERS}),
    "training:monitoring-alert-ack": (_alert, {"POST": ENGINEERS}),
    "training:webhooks": (_route, {"GET": ADMINS, "POST": ADMINS}),
    "home": (_route, {"GET": SIGNED_IN}),
    "queue-work": (_queue_work, {"GET": WORKERS}),
    "lease-decide": (_page_lease, {"POST": WORKERS}),
    "lease-skip": (_page_lease, {"POST": WORKERS}),
    "lease-renew": (_page_lease, {"POST": WORKERS}),
    "my-reviews": (_route, {"GET": SIGNED_IN}),
    # Anyone signed in reaches the page; undoing someone else's decision is refused by the
    # service with a message and nothing changes (tests/reviews/test_views_history.py).
    "review-undo": (_page_review, {"POST": SIGNED_IN}),
}

# Bodies that pass validation, so that the role alone decides (an empty body may be refused
# with 400 before the role is looked at, which would read as "allowed").
BODIES = {
    "api-signoff-decide": lambda world: {"decision": "approve", "comment": "looks fine"},
    "training:signoff-decide": lambda world: {"decision": "approve", "comment": "looks fine"},
    "training:signoff-new": lambda world: {"channel": world.spare_channel.name},
    "training:channel-deploy": lambda world: {"version": str(world.approved.pk)},
}

# Django's own: the admin lets only staff in (its own permission system decides what they
# see), the account pages are public.
PREFIX_RULES = {"admin/": "staff only (tests/reliability/test_idor.py)", "accounts/": "public"}


def url_patterns(resolver=None, prefix="", namespace=""):
    """(route, "namespace:name", pattern) for every pattern the resolver knows."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from url_patterns(pattern, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), f"{namespace}{pattern.name}", pattern


def project_patterns():
    for route, name, pattern in url_patterns():
        if any(route.startswith(p) for p in PREFIX_RULES):
            continue
        yield route, name, pattern


def implemented_methods(pattern) -> set[str] | None:
    view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
    if view is None:
        return None
    return {m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)}


def test_every_url_pattern_has_a_rule():
    missing = []
    for route, name, _pattern in project_patterns():
        if name not in TABLE:
            missing.append(f"{route} (name={name})")
    assert missing == [], "URL patterns without a row in the permission table:\n" + "\n".join(
        missing
    )


def test_every_api_view_method_has_a_rule():
    """A method added to an existing API view needs its own row too."""
    wrong = []
    for route, name, pattern in project_patterns():
        methods = implemented_methods(pattern)
        if methods is None or name not in TABLE:
            continue
        listed = set(TABLE[name][1])
        if methods - {"OPTIONS", "HEAD"} != listed:
            wrong.append(f"{route}: view has {sorted(methods)}, table has {sorted(listed)}")
    assert wrong == [], "\n".join(wrong)


def client_for(world, who, url="/api/"):
    client = APIClient() if url.startswith("/api/") else Client()
    if who != ANONYMOUS:
        client.force_login(world.people[who])
    return client


def outcome(response) -> str:
    status = response.status_code
    if status >= 500:
        return f"error {status}"
    if status in (401, 403):
        return "refused"
    if status in (301, 302) and "/accounts/login/" in response.get("Location", ""):
        return "refused"
    return "allowed"


@pytest.mark.once  # roles are checked in Python, the same on every database
def test_every_role_gets_what_the_table_says(world):
    wrong = []
    for name, (kwargs_for, methods) in TABLE.items():
        for method, allowed in methods.items():
            for who in WHO:
                url = reverse(name, kwargs=kwargs_for(world, who))
                data = BODIES.get(name, lambda world: {})(world)
                call = getattr(client_for(world, who, url), method.lower())
                response = call(url, data) if data else call(url)
                got = outcome(response)
                expected = "allowed" if who in allowed else "refused"
                if got != expected:
                    wrong.append(f"{method} {url} as {who}: {got} ({response.status_code})")
    assert wrong == [], "\n".join(wrong)
