"""The compliance report of a model version, its archive, and lineage reads.

Everything here reads; the report is assembled from the records the lifecycle wrote (runs,
dataset versions, reviews, sign-offs, deployments, the audit chain), never typed in."""

import io
import json
import zipfile
from collections import Counter
from typing import Any

from django.db.models import Count, Q
from django.template.loader import render_to_string
from django.utils import timezone

from core.audit import audit_verified_head
from core.errors import AuditChainBroken
from core.models import AuditEvent
from datasets_app.models import DatasetVersionExample, Example
from datasets_app.selectors import dataset_version_card
from governance.models import Deployment, SignoffRequest
from governance.policy import FRAMEWORK_MAP
from reviews.models import Output, Review
from reviews.selectors import cohens_kappa
from training_app.errors import ArtifactTampered
from training_app.models import ModelVersion
from training_app.services.versions import artifact_verify, manifest_digest

SECTIONS = list(FRAMEWORK_MAP)


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment else None


def version_outputs(version: ModelVersion):
    """Outputs of the dataset's examples: what the version was trained and evaluated on."""
    return Output.objects.filter(dataset_example__memberships__version=version.dataset_version_id)


def _identity(version: ModelVersion) -> dict[str, Any]:
    try:
        artifact_verify(version=version)
        verified, problem = True, ""
    except ArtifactTampered as exc:
        verified, problem = False, exc.message
    return {
        "id": str(version.pk),
        "name": version.name,
        "status": version.status,
        "created_by": version.created_by.get_username(),
        "created_at": _iso(version.created_at),
        "trained_at": _iso(version.trained_at),
        "parent": {"id": str(version.parent_id), "name": version.parent.name}
        if version.parent_id
        else None,
        "adapter_manifest": version.manifest,
        "manifest_digest": manifest_digest(version.manifest) if version.manifest else None,
        "artifact_verified_now": verified,
        "artifact_problem": problem,
    }


def _training(version: ModelVersion) -> dict[str, Any]:
    run = version.run
    return {
        "run": str(run.pk),
        "launched_by": run.created_by.get_username(),
        "status": run.status,
        "attempts": run.attempts,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "configuration": version.config,
        "metrics": version.metrics,
        "environment": version.environment,
    }


def _dataset(version: ModelVersion) -> dict[str, Any]:
    dataset = version.dataset_version
    counts = dataset.counts or {}
    return {
        "id": dataset.pk,
        "name": dataset.name,
        "status": dataset.status,
        "manifest_hash": dataset.manifest_hash,
        "built_by": dataset.created_by.get_username(),
        "built_at": _iso(dataset.built_at),
        "settings": dataset.settings,
        "splits": {"train": counts.get("train"), "eval": counts.get("eval")},
        "pipeline_removals": [
            {
                "step": step.get("name"),
                "in": step.get("in"),
                "out": step.get("out"),
                "removed": step.get("removed", 0),
                "reasons": step.get("reasons", {}),
            }
            for step in counts.get("steps", [])
        ],
        "pii_counts": counts.get("pii", {}),
        "data_card": dataset_version_card(version=dataset),
    }


def _examples(version: ModelVersion) -> dict[str, Any]:
    rows = (
        DatasetVersionExample.objects.filter(version=version.dataset_version_id)
        .values("split", "label", "example__queue_name", "example__source")
        .annotate(n=Count("id"))
    )
    by_queue: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    by_split: Counter[str] = Counter()
    by_label: Counter[str] = Counter()
    for row in rows:
        by_queue[row["example__queue_name"] or "(auto-accepted)"] += row["n"]
        by_source[row["example__source"]] += row["n"]
        by_split[row["split"]] += row["n"]
        by_label[row["label"]] += row["n"]
    return {
        "total": sum(by_split.values()),
        "by_split": dict(by_split),
        "by_queue": dict(sorted(by_queue.items())),
        "by_source": dict(sorted(by_source.items())),
        "by_label": dict(sorted(by_label.items())),
    }


def _reviews(version: ModelVersion):
    return Review.objects.filter(
        output__dataset_example__memberships__version=version.dataset_version_id,
        undone_at__isnull=True,
    )


def _reviewers(version: ModelVersion) -> list[dict[str, Any]]:
    rows = (
        _reviews(version)
        .values("reviewer__username")
        .annotate(
            items=Count("output", distinct=True),
            reviews=Count("id"),
            corrections=Count("id", filter=Q(decision="correct")),
            lead_decisions=Count("id", filter=Q(stage="lead")),
        )
        .order_by("reviewer__username")
    )
    return [
        {
            "reviewer": r["reviewer__username"],
            "items": r["items"],
            "reviews": r["reviews"],
            "corrections": r["corrections"],
            "lead_decisions": r["lead_decisions"],
        }
        for r in rows
    ]


def _agreement(version: ModelVersion) -> dict[str, Any]:
    rows = (
        _reviews(version)
        .filter(stage=Review.Stage.REVIEW)
        .order_by("output_id", "created_at", "id")
        .values_list("output_id", "decision")
    )
    firsts: dict[int, list[str]] = {}
    for output_id, decision in rows:
        labels = firsts.setdefault(output_id, [])
        if len(labels) < 2:
            labels.append(decision)
    pairs = [(a[0], a[1]) for a in firsts.values() if len(a) == 2]
    observed, kappa = cohens_kappa(pairs)
    resolved = Counter(
        Example.objects.filter(memberships__version=version.dataset_version_id).values_list(
            "resolved_by", flat=True
        )
    )
    return {
        "double_reviewed_items": len(pairs),
        "percent_agreement": observed,
        "cohens_kappa": kappa,
        "resolved_by": dict(resolved),
    }


def _evaluations(version: ModelVersion) -> list[dict[str, Any]]:
    return [
        {
            "id": str(e.pk),
            "status": e.status,
            "against": e.reference_label,
            "split": e.split,
            "channel": e.channel.name if e.channel_id else None,
            "metrics": e.metrics,
            "samples": e.samples,
            "failure_reason": e.failure_reason,
            "finished_at": _iso(e.finished_at),
        }
        for e in version.evaluations.select_related("reference", "channel").order_by("created_at")
    ]


def _approvals(version: ModelVersion) -> list[dict[str, Any]]:
    requests = (
        SignoffRequest.objects.filter(version=version)
        .select_related("channel", "requested_by", "live_version")
        .prefetch_related("approvals__approver")
        .order_by("created_at")
    )
    return [
        {
            "id": r.pk,
            "channel": r.channel.name,
            "status": r.status,
            "policy": r.policy,
            "requested_by": r.requested_by.get_username(),
            "requested_at": _iso(r.created_at),
            "live_version": r.live_version.name if r.live_version_id else None,
            "decided_at": _iso(r.decided_at),
            "decisions": [
                {
                    "approver": a.approver.get_username(),
                    "decision": a.decision,
                    "comment": a.comment,
                    "override": a.override,
                    "override_reason": a.override_reason,
                    "gate_passed": a.gate.get("passed"),
                    "gate_problems": a.gate.get("problems", []),
                    # Absent from gates recorded before the gate named its comparison.
                    "gate_compared_with": a.gate.get("compared_with"),
                    "at": _iso(a.created_at),
                }
                for a in r.approvals.all()
            ],
        }
        for r in requests
    ]


def _deployments(version: ModelVersion) -> list[dict[str, Any]]:
    rows = (
        Deployment.objects.filter(Q(version=version) | Q(replaced=version))
        .select_related("channel", "version", "replaced", "actor")
        .order_by("created_at", "id")
    )
    return [
        {
            "id": d.pk,
            "channel": d.channel.name,
            "action": d.action,
            "version": d.version.name,
            "replaced": d.replaced.name if d.replaced_id else None,
            "this_version": "went live" if d.version_id == version.pk else "taken off",
            "by": d.actor.get_username(),
            "comment": d.comment,
            "manifest_digest": d.manifest_digest,
            "at": _iso(d.created_at),
        }
        for d in rows
    ]


def _audit_chain(version: ModelVersion) -> dict[str, Any]:
    try:
        # The head lets an auditor anchor this report to the log later
        # (`manage.py verify_audit --head SEQ:HASH` or `--report`).
        head = audit_verified_head()
        status = {
            "verified": True,
            "events": head["seq"],
            "head": head,
            "broken_at": None,
            "problem": "",
        }
    except AuditChainBroken as exc:
        # No head: one taken from a broken chain would vouch for events that do not hold.
        status = {
            "verified": False,
            "events": None,
            "head": None,
            "broken_at": exc.seq,
            "problem": str(exc),
        }
    ids = [str(version.pk), str(version.run_id)]
    events = AuditEvent.objects.filter(object_id__in=ids).order_by("seq")
    status["version_events"] = [
        {
            "seq": e.seq,
            "at": _iso(e.created_at),
            "actor": e.actor_name,
            "action": e.action,
            "hash": e.hash,
        }
        for e in events
    ]
    return status


def _monitoring(version: ModelVersion) -> dict[str, Any]:
    first = Deployment.objects.filter(version=version).order_by("created_at").first()
    outputs = Output.objects.filter(model_version=version.name, source__startswith="channel:")
    by_status = dict(outputs.values_list("status").annotate(n=Count("id")).order_by())
    by_resolution = dict(
        outputs.exclude(resolution="").values_list("resolution").annotate(n=Count("id")).order_by()
    )
    by_channel = dict(outputs.values_list("source").annotate(n=Count("id")).order_by())
    total = sum(by_status.values())
    reviewed = outputs.filter(reviews__isnull=False).distinct().count()
    resolved = sum(by_resolution.values())
    return {
        "released_at": _iso(first.created_at) if first else None,
        "answers": total,
        "by_channel": by_channel,
        "by_status": by_status,
        "by_resolution": by_resolution,
        "reviewed": reviewed,
        "approval_rate": (by_resolution.get("approved", 0) / resolved) if resolved else None,
        "correction_rate": (by_resolution.get("corrected", 0) / resolved) if resolved else None,
        "rejection_rate": (by_resolution.get("rejected", 0) / resolved) if resolved else None,
    }


def compliance_report(*, version: ModelVersion) -> dict[str, Any]:
    version = ModelVersion.objects.select_related(
        "run__created_by", "dataset_version__created_by", "base_model", "created_by", "parent"
    ).get(pk=version.pk)
    return {
        "header": {
            "title": f"Compliance report: model version {version.name}",
            "generated_at": timezone.now().isoformat(),
            "sections": SECTIONS,
            "framework_map": FRAMEWORK_MAP,
            "frameworks": {
                "eu_ai_act": "Regulation (EU) 2024/1689: Article 12 record-keeping, "
                "Article 14 human oversight",
                "nist_ai_rmf": "NIST AI 100-1, AI Risk Management Framework 1.0",
            },
        },
        "identity": _identity(version),
        "base_model": {**version.base_model_ref, "architecture": version.base_model.architecture},
        "training": _training(version),
        "dataset": _dataset(version),
        "examples": _examples(version),
        "reviewers": _reviewers(version),
        "agreement": _agreement(version),
        "evaluations": _evaluations(version),
        "approvals": _approvals(version),
        "deployments": _deployments(version),
        "audit_chain": _audit_chain(version),
        "monitoring": _monitoring(version),
    }


def compliance_archive(*, version: ModelVersion) -> bytes:
    """report.json, report.html, data card, dataset manifest, adapter checksums, audit events."""
    report = compliance_report(version=version)
    members = DatasetVersionExample.objects.filter(version=version.dataset_version_id).order_by(
        "split", "position"
    )
    dataset_manifest = "".join(
        json.dumps(
            {
                "example": m.example_id,
                "split": m.split,
                "position": m.position,
                "content_hash": m.content_hash,
            }
        )
        + "\n"
        for m in members
    )
    sums = "".join(f"{digest}  {name}\n" for name, digest in sorted(version.manifest.items()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.json", json.dumps(report, indent=2, sort_keys=True, default=str))
        archive.writestr(
            "report.html",
            render_to_string(
                "training_app/compliance.html", {"report": report, "version": version}
            ),
        )
        archive.writestr("data_card.md", report["dataset"]["data_card"])
        archive.writestr("dataset_manifest.jsonl", dataset_manifest)
        archive.writestr("adapter_manifest.json", json.dumps(version.manifest, indent=2))
        archive.writestr("adapter_SHA256SUMS", sums)
        archive.writestr(
            "training_config.json", json.dumps(version.config, indent=2, sort_keys=True)
        )
    return buffer.getvalue()


def example_lineage(*, example: Example) -> dict[str, Any]:
    """From an example back to its output and reviews, and on to the versions trained on it."""
    output = example.output
    reviews = list(
        output.reviews.select_related("reviewer", "queue", "guideline_version").order_by(
            "created_at", "id"
        )
    )
    memberships = list(example.memberships.select_related("version").order_by("version_id"))
    versions = list(
        ModelVersion.objects.filter(
            dataset_version__in=[m.version_id for m in memberships]
        ).order_by("created_at")
    )
    return {"output": output, "reviews": reviews, "memberships": memberships, "versions": versions}
