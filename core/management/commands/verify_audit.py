import json
import re
import zipfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.audit import audit_verify, audit_verify_against_head
from core.errors import AuditChainBroken

HEAD_PATTERN = re.compile(r"^(\d+):([0-9a-fA-F]{64})$")


class Command(BaseCommand):
    help = (
        "Verify the whole audit hash chain; exit non-zero naming the first broken event. With "
        "--head or --report, also check that the log still holds the head a compliance report "
        "recorded (nothing up to it rewritten or truncated since)."
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

    def handle(self, *args, head: str | None = None, report: str | None = None, **options):
        anchor = _head_from_report(Path(report)) if report else _head_parse(head) if head else None
        try:
            if anchor is None:
                count = audit_verify()
            else:
                count = audit_verify_against_head(seq=anchor[0], head_hash=anchor[1])
        except AuditChainBroken as broken:
            raise CommandError(
                f"audit chain BROKEN at event #{broken.seq}: {broken.message}"
            ) from None
        self.stdout.write(self.style.SUCCESS(f"audit chain intact: {count} events verified"))
        if anchor is not None:
            seq, digest = anchor
            self.stdout.write(
                self.style.SUCCESS(f"head held: event #{seq} still has hash {digest[:16]}…")
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
