"""A team's own published contact details are not personal data: `pii_allow` keeps them, and
nothing else, out of the PII mask (masking them taught the model to answer "call <PHONE>")."""

import io

import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from datasets_app import pipeline, services
from datasets_app.errors import InvalidDatasetRequest
from datasets_app.models import DatasetVersion
from datasets_app.services.build_settings import BuildSettings

OURS = ["1-800-555-0142", "complaints@harbormutual.example"]


def scrub(text: str, allow=OURS) -> tuple[str, dict]:
    cleaned, found = pipeline.PiiScrubber(allow=allow).scrub(text)
    return cleaned, dict(found)


@pytest.mark.parametrize(
    ("text", "expected", "found"),
    [
        ("call 1-800-555-0142; towing", "call 1-800-555-0142; towing", {}),
        (
            "write to Complaints@HarborMutual.example.",
            "write to Complaints@HarborMutual.example.",
            {},
        ),
        # The customer's number beside ours is still masked.
        ("me: 555-123-4567, us: 1-800-555-0142", "me: <PHONE>, us: 1-800-555-0142", {"PHONE": 1}),
        # Only the whole text counts: not inside a longer number or address.
        ("call 11-800-555-0142", "call <PHONE>", {"PHONE": 1}),
        ("x.complaints@harbormutual.example", "<EMAIL>", {"EMAIL": 1}),
        ("complaints@harbormutual.example.com", "<EMAIL>", {"EMAIL": 1}),
        ("ann@example.com", "<EMAIL>", {"EMAIL": 1}),
    ],
)
def test_only_the_allowed_texts_are_kept(text, expected, found):
    assert scrub(text) == (expected, found)


def test_a_north_american_number_is_masked_whole_with_its_leading_one():
    # It used to leave "1-<PHONE>" behind.
    assert scrub("call 1-800-555-0143 now", allow=()) == ("call <PHONE> now", {"PHONE": 1})
    assert scrub("dated 1 2023-11-05", allow=()) == ("dated 1 2023-11-05", {})


def test_allowed_texts_are_kept_from_configured_patterns_too():
    scrubber = pipeline.PiiScrubber({"TOLLFREE": r"1-800-\d{3}-\d{4}"}, allow=OURS)
    assert scrubber.scrub("ours 1-800-555-0142, theirs 1-800-555-0199")[0] == (
        "ours 1-800-555-0142, theirs <TOLLFREE>"
    )


def test_drop_mode_keeps_examples_whose_only_numbers_are_ours():
    def item(n, answer):
        return pipeline.Item(
            example_id=n,
            messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}],
            label="approved",
            weight=1.0,
        )

    items = [item(1, "call 1-800-555-0142"), item(2, "call me on 555-123-4567")]
    out, report, per_type = pipeline.step_pii(items, mode="drop", allow=OURS)
    assert [i.example_id for i in out] == [1]
    assert per_type == {"PHONE": 1} and report.reasons == {"contains PHONE": 1}


def test_settings_validate_and_keep_old_manifests():
    settings = BuildSettings.from_options({"pii_allow": [" 1-800-555-0142 ", "", "a@b.io"]})
    assert settings.pii_allow == ("1-800-555-0142", "a@b.io")
    assert settings.as_json()["pii_allow"] == ["1-800-555-0142", "a@b.io"]
    # Empty: left out, so versions built before the setting keep their stored settings and hash.
    assert "pii_allow" not in BuildSettings.from_options({}).as_json()
    assert "pii_allow" not in BuildSettings.from_options({}).manifest_json()
    for bad, message in [
        (3, "must be a list"),
        ([1], "must be a list"),
        (["ab"], "too short"),
        (["x" * 201], "longer than 200"),
        ([f"n{i:03d}" for i in range(101)], "at most 100"),
    ]:
        with pytest.raises(InvalidDatasetRequest, match=message) as caught:
            BuildSettings.from_options({"pii_allow": bad})
        assert caught.value.field == "pii_allow"


@pytest.mark.django_db
def test_a_build_keeps_our_number_and_masks_the_customers(resolved, personas):
    resolved("My car broke down, my number is 555-123-4567", "Call us on 1-800-555-0142.")
    version = services.dataset_version_build(
        user=personas["ml_engineer"], name="roadside", pii_allow=OURS
    )
    assert version.settings["pii_allow"] == sorted(OURS)
    assert version.counts["pii"] == {"PHONE": 1}
    exported = _export(version)
    assert "Call us on 1-800-555-0142." in exported
    assert "555-123-4567" not in exported and "<PHONE>" in exported


def _export(version) -> str:
    client = Client()
    client.force_login(version.created_by)
    answer = client.get(f"/api/datasets/{version.pk}/export/?format=chat")
    assert answer.status_code == 200
    return (
        b"".join(answer.streaming_content).decode() if answer.streaming else answer.content.decode()
    )


@pytest.mark.django_db
def test_the_project_setting_is_every_builds_default_and_a_build_may_say_otherwise(
    resolved, personas
):
    resolved("Can I call you?", "Yes: 1-800-555-0142.")
    with override_settings(SIGNOFF_PII_ALLOW=["1-800-555-0142"]):
        default = services.dataset_version_build(user=personas["admin"], name="default")
        explicit = services.dataset_version_build(
            user=personas["admin"], name="explicit", pii_allow=[]
        )
    assert default.settings["pii_allow"] == ["1-800-555-0142"] and default.counts["pii"] == {}
    assert "pii_allow" not in explicit.settings and explicit.counts["pii"] == {"PHONE": 1}


@pytest.mark.django_db
def test_the_api_takes_it_and_refuses_bad_values_with_a_400(resolved, api, personas):
    resolved("Can I call you?", "Yes: 1-800-555-0142.")
    client = api(personas["ml_engineer"])
    bad = client.post("/api/datasets/", {"name": "x", "pii_allow": ["ab"]}, format="json")
    assert bad.status_code == 400 and bad.json()["field"] == "pii_allow"
    assert "too short" in bad.json()["detail"]
    assert not DatasetVersion.objects.exists()
    good = client.post(
        "/api/datasets/", {"name": "x", "pii_allow": ["1-800-555-0142"]}, format="json"
    )
    assert good.status_code == 201, good.json()
    assert DatasetVersion.objects.get().counts["pii"] == {}


@pytest.mark.django_db
@pytest.mark.once
def test_the_build_form_shows_the_project_default_and_sends_what_is_typed(resolved, personas):
    resolved("Can I call you?", "Yes: 1-800-555-0142.")
    client = Client()
    client.force_login(personas["ml_engineer"])
    with override_settings(SIGNOFF_PII_ALLOW=["1-800-555-0142", "help@example.com"]):
        page = client.get("/datasets/new/").content.decode()
    assert "1-800-555-0142\nhelp@example.com</textarea>" in page
    response = client.post(
        "/datasets/new/",
        {"name": "form", "labels": ["approved", "corrected"], "pii": "mask",
         "near_dup_threshold": "0.8", "leakage_threshold": "0.8", "seed": "0",
         "eval_fraction": "0.1", "run": "inline", "pii_allow": "1-800-555-0142\n\n"},
    )  # fmt: skip
    assert response.status_code == 302
    assert DatasetVersion.objects.get().settings["pii_allow"] == ["1-800-555-0142"]


@pytest.mark.django_db
def test_the_command_takes_it(resolved, personas):
    resolved("Can I call you?", "Yes: 1-800-555-0142.")
    call_command(
        "build_dataset", "--name=cli", "--user=admin", "--pii-allow=1-800-555-0142",
        stdout=io.StringIO(), stderr=io.StringIO(),
    )  # fmt: skip
    assert DatasetVersion.objects.get().counts["pii"] == {}
