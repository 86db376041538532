import json
import re
import zipfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.audit import (
    audit_sealing_status,
    audit_verify,
    audit_verify_against_head,
    audit_verify_since,
)
from core.errors import AuditChainBroken
from core.models import AuditHead

HEAD_PATTERN = re.compile(r"^(\d+):([0-9a-fA-F]{64})$")


class Command(BaseCommand):
    help = (
        "Seal what is final, then verify the whole audit hash chain; exit non-zero naming the "
        "first broken event, or when events have waited for their seal longer than "
        "AUDIT_SEAL_LAG_SECONDS. With --head or --report, also check that the log still holds "
        "the head a compliance report recorded (nothing up to it rewritten or truncated since). "
        "With --since, verify only the events sealed after a head verified earlier."
    )

    def add_arguments(self, parser):
        anchor = parser.add_mutually_exclusive_group()
        anchor.add_argument(
            "--head",
            metavar="SEQ:HASH",
            help="the audit chain head from a compliance report: event number and its hash",
        )
        anchor.add_argument(
            "--report",
            metavar="PATH",
            help="a compliance report (its JSON, or the archive .zip): check its head",
        )
        anchor.add_argument(
            "--since",
            metavar="SEQ:HASH",
            help=(
                "incremental: a head verified earlier (the last run's output); check that the "
                "log still holds it and verify only the events after it"
            ),
        )

    def handle(
        self,
        *args,
        head: str | None = None,
        report: str | None = None,
        since: str | None = None,
        **options,
    ):
        anchor = _head_from_report(Path(report)) if report else _head_parse(head) if head else None
        start = _head_parse(since) if since else None
        try:
            if start is not None:
                done = audit_verify_since(seq=start[0], head_hash=start[1])
                count = done.events
                summary = (
                    f"audit chain intact: {done.checked} events verified after the head "
                    f"#{start[0]} (the chain holds {count} events)"
                )
            else:
                count = (
                    audit_verify()
                    if anchor is None
                    else audit_verify_against_head(seq=anchor[0], head_hash=anchor[1])
                )
                summary = f"audit chain intact: {count} events verified"
        except AuditChainBroken as broken:
            raise CommandError(
                f"audit chain BROKEN at event #{broken.seq}: {broken.message}"
            ) from None
        self.stdout.write(self.style.SUCCESS(summary))
        if anchor is not None:
            seq, digest = anchor
            self.stdout.write(
                self.style.SUCCESS(f"head held: event #{seq} still has hash {digest[:16]}…")
            )
        sealing = audit_sealing_status()
        head_row = AuditHead.objects.filter(pk=1).values_list("seq", "hash").first()
        if head_row and head_row[0]:
            self.stdout.write(f"sealed through event #{head_row[0]}: {head_row[0]}:{head_row[1]}")
        self.stdout.write(
            f"waiting for their seal: {sealing.unsealed} events, oldest "
            f"{sealing.lag_seconds:.1f} s (limit {sealing.lag_limit_seconds:g} s)"
        )
        if sealing.overdue:
            raise CommandError(
                f"audit sealing OVERDUE: {sealing.unsealed} events unsealed, the oldest for "
                f"{sealing.lag_seconds:.1f} s (limit AUDIT_SEAL_LAG_SECONDS = "
                f"{sealing.lag_limit_seconds:g} s): a transaction that appended audit events is "
                "still running, or the sealer cannot keep up"
            )


def _head_parse(text: str) -> tuple[int, str]:
    match = HEAD_PATTERN.match(text.strip())
    if match is None:
        raise CommandError(
            f"--head {text!r}: expected SEQ:HASH (event number, colon, 64 hex digits)"
        )
    return int(match[1]), match[2].lower()


def _head_from_report(path: Path) -> tuple[int, str]:
    """The audit chain head a compliance report recorded: report.json itself, or the archive
    that holds it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                report = json.loads(archive.read("report.json"))
        else:
            report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError) as exc:
        raise CommandError(f"--report {path}: cannot read a compliance report ({exc})") from None
    chain = report.get("audit_chain") if isinstance(report, dict) else None
    head = chain.get("head") if isinstance(chain, dict) else None
    if not isinstance(head, dict) or "seq" not in head or "hash" not in head:
        raise CommandError(
            f"--report {path}: the report records no audit chain head (made before reports "
            "carried one, or the chain did not verify when it was made)"
        )
    return _head_parse(f"{head['seq']}:{head['hash']}")
