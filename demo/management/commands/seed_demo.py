"""Demo users (one per role), queues, routing rules and a few hundred outputs, through the same
services the API uses. Idempotent: a second run changes nothing."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from core.roles import Role
from demo.data import demo_outputs, demo_regression_set, demo_right_answers
from reviews.models import Output, Queue, RoutingRule
from reviews.services import (
    outputs_ingest,
    queue_claim_next,
    queue_save,
    review_submit,
    routing_rule_save,
)

DEMO_USERS = [
    ("reviewer", Role.REVIEWER),
    ("reviewer2", Role.REVIEWER),
    ("lead", Role.LEAD),
    ("ml_engineer", Role.ML_ENGINEER),
    ("approver", Role.APPROVER),
    ("approver2", Role.APPROVER),
    ("deployer", Role.DEPLOYER),
    ("auditor", Role.AUDITOR),
    ("admin", Role.ADMIN),
]

GUIDELINES = """# Harbor Mutual support answers

- **Approve** when the answer is correct, complete and in house style: the direct answer
  first, two or three short sentences, and a concrete *Next step:* at the end.
- **Correct** when the facts or the style are off: fix the text, keep it short.
- **Reject** when the answer cannot be salvaged (wrong topic, unsafe, leaks personal data).
- **Escalate** when you are not sure what the policy says.

Facts to check: collision deductible $500 on standard policies; claims paid in 5-10 business
days; towing up to 15 miles; payment date movable once per term (1st-28th).
"""

QUEUES = [
    ("low-confidence", "Answers the model was unsure of.", 1),
    ("policy-review", "Complaints and policy flags: two reviewers must agree.", 2),
    ("audit-sample", "A random sample of confident answers, checked anyway.", 1),
]

RULES = [
    ("complaints to policy review", {"tag": "complaint", "queue": "policy-review"}),
    ("low confidence", {"confidence_below": 0.75, "queue": "low-confidence"}),
    ("audit sample 35%", {"sample_rate": 0.35, "queue": "audit-sample"}),
    ("auto-accept confident", {"action": RoutingRule.Action.AUTO_ACCEPT}),
]

DEMO_CHANNELS = [
    ("staging", "Internal testing before release.", {"approvals_required": 1}),
    ("production", "Customer-facing answers.", {"approvals_required": 2}),
]

DEMO_REGRESSION_SET = demo_regression_set()


def demo_password(username: str) -> str:
    return f"{username}-demo-pass"


class Command(BaseCommand):
    help = "Create demo users, queues, routing rules and demo outputs (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--outputs", type=int, default=600)
        parser.add_argument(
            "--leave-pending",
            type=int,
            default=8,
            help="Items the demo reviewers leave in each queue for you to review.",
        )
        parser.add_argument(
            "--no-reviews", action="store_true", help="Leave the routed outputs unreviewed."
        )

    def handle(
        self, *args, outputs: int, leave_pending: int = 8, no_reviews: bool = False, **options
    ):
        call_command("bootstrap_roles", verbosity=0, stdout=self.stdout)
        with transaction.atomic():
            admin = self._users()
            self._queues_and_rules(admin)
            self._channels(admin)
        batch = list(demo_outputs(outputs))
        result = outputs_ingest(payload=batch, actor=admin)
        self.stdout.write(
            f"demo outputs: {result.created_count} new, "
            f"{len(batch) - result.created_count} already there"
        )
        # Reviews only on a fresh seed: on a restart the pending items may be the newcomer's
        # own (live answers included), which the demo reviewers must not decide for them.
        if not no_reviews and result.created_count:
            approved, corrected = self._review(outputs, leave_pending)
            self.stdout.write(f"demo reviews: {approved} approved, {corrected} corrected")
        self.stdout.write("\nDemo users (username / password):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<12} {demo_password(username):<24} {role.label}")

    def _users(self):
        User = get_user_model()
        admin = None
        for username, role in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(demo_password(username))
                user.email = f"{username}@signoff.example"
                if role == Role.ADMIN:
                    user.is_staff = user.is_superuser = True
                user.save()
            user.groups.add(Group.objects.get(name=role))
            if role == Role.ADMIN:
                admin = user
        return admin

    def _queues_and_rules(self, admin) -> None:
        for name, description, required in QUEUES:
            queue = Queue.objects.filter(name=name).first()
            if queue is None:
                queue_save(
                    user=admin,
                    name=name,
                    description=description,
                    required_reviews=required,
                    gold_rate=0.0,
                    guidelines=GUIDELINES,
                )
        for position, (name, spec) in enumerate(RULES, start=1):
            if RoutingRule.objects.filter(name=name).exists():
                continue
            values = dict(spec)
            if "queue" in values:
                values["queue"] = Queue.objects.get(name=values["queue"])
            routing_rule_save(user=admin, name=name, position=position * 10, **values)

    def _channels(self, admin) -> None:
        """Release channels for the governance demo: staging signs off with one approver,
        production with two (approver and approver2), each with a small regression set."""
        # Imported here: the review app itself knows nothing of training; only the demo does.
        from governance.models import Channel
        from governance.services import channel_save

        for name, description, policy in DEMO_CHANNELS:
            if not Channel.objects.filter(name=name).exists():
                channel_save(
                    user=admin,
                    name=name,
                    description=description,
                    policy=policy,
                    regression_set=DEMO_REGRESSION_SET,
                )

    def _review(self, count: int, leave_pending: int) -> tuple[int, int]:
        """The demo reviewers work every queue through the same services as the review page:
        right answers are approved, wrong ones corrected to the house-style answer, so the
        corrections become training data the base model has never seen."""
        User = get_user_model()
        right = demo_right_answers(count)
        reviewers = [User.objects.get(username=name) for name in ("reviewer", "reviewer2")]
        approved = corrected = 0
        for queue in Queue.objects.filter(kind=Queue.Kind.REVIEW, is_active=True):
            pending = Output.objects.filter(queue=queue, status=Output.Status.PENDING).count()
            to_review = max(0, pending - leave_pending)
            for reviewer in reviewers[: queue.required_reviews]:
                for _ in range(to_review):
                    lease = queue_claim_next(queue=queue, user=reviewer)
                    if lease is None:
                        break
                    output = Output.objects.get(pk=lease.output_id)
                    answer = right.get(output.external_id, output.output_text)
                    if answer == output.output_text:
                        review_submit(lease_id=lease.id, user=reviewer, decision="approve")
                        approved += 1
                    else:
                        review_submit(
                            lease_id=lease.id,
                            user=reviewer,
                            decision="correct",
                            corrected_output=answer,
                            comment="House style: direct answer first, then 'Next step:'.",
                        )
                        corrected += 1
        return approved, corrected
