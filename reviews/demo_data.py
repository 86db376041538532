"""Realistic demo traffic: an insurance customer-support assistant ("Harbor Mutual"), some of
whose answers are wrong. Deterministic from a seed, so every demo looks the same."""

import random
from collections.abc import Iterator
from typing import Any

SYSTEM_PROMPT = (
    "You are Harbor Mutual's customer support assistant. Answer in two or three short "
    "sentences, start with the direct answer, and end with the next step the customer can take."
)

# (topic, customer questions, a right answer, a wrong answer the model sometimes gives)
SCENARIOS: list[tuple[str, list[str], str, str]] = [
    (
        "claims",
        [
            "How do I file a claim after a car accident?",
            "I had a fender bender this morning, how do I start a claim?",
            "What's the process to report an accident to you?",
        ],
        "You can file a claim in the Harbor Mutual app under Claims > New claim, or by phone "
        "24/7. Have your policy number, photos of the damage and the other driver's details "
        "ready. Next step: open the app and start the claim; an adjuster contacts you within "
        "one business day.",
        "You need to visit one of our branch offices in person within 24 hours to file a claim. "
        "Claims reported later than that cannot be accepted.",
    ),
    (
        "claims",
        [
            "How long does a claim usually take to be paid?",
            "When will I get the money for my claim?",
        ],
        "Most approved claims are paid within 5 to 10 business days after the adjuster's "
        "assessment. Complex claims involving injuries can take longer. Next step: track the "
        "status under Claims in the app.",
        "All claims are paid within 24 hours, guaranteed.",
    ),
    (
        "policy",
        [
            "What is my deductible for collision coverage?",
            "How much is the collision deductible on a standard policy?",
        ],
        "On a standard auto policy the collision deductible is $500 unless you chose a "
        "different amount at purchase. Your exact figure is on the declarations page. Next "
        "step: open Policy > Documents in the app to check it.",
        "There is no deductible for collision on any of our policies.",
    ),
    (
        "policy",
        [
            "Does my policy cover rental cars?",
            "Am I covered when I drive a rental car on vacation?",
        ],
        "Yes: your liability and collision coverage extend to a rental car you drive in the US "
        "and Canada for personal use. Rental reimbursement while your own car is repaired is a "
        "separate add-on. Next step: check Policy > Coverages to see whether you have it.",
        "Rental cars are never covered; you must buy the rental company's insurance.",
    ),
    (
        "billing",
        [
            "Can I change my payment date?",
            "I'd like to pay on the 15th instead of the 1st, is that possible?",
        ],
        "Yes, you can move your payment date once per policy term to any day between the 1st "
        "and the 28th. The change applies from the next billing cycle. Next step: go to "
        "Billing > Payment schedule in the app.",
        "Payment dates are fixed by law and cannot be changed.",
    ),
    (
        "billing",
        [
            "Why did my premium go up this year?",
            "My renewal price is higher than last year, why?",
        ],
        "Premiums can change at renewal because of claims in your area, repair costs, or "
        "changes to your driving record or vehicle. Your renewal notice lists the factors that "
        "applied to you. Next step: call us to review discounts you may qualify for.",
        "Your premium went up because you filed a claim last year.",
    ),
    (
        "roadside",
        [
            "My car broke down on the highway, what do I do?",
            "I need a tow, do you offer roadside assistance?",
        ],
        "If you have roadside assistance, request help in the app under Roadside or call "
        "1-800-555-0142; towing up to 15 miles is included. Stay in a safe place away from "
        "traffic. Next step: open Roadside in the app to share your location.",
        "We do not offer roadside assistance; please call a private towing company.",
    ),
    (
        "home",
        [
            "Is water damage from a burst pipe covered?",
            "A pipe burst in my kitchen, will my home policy pay for it?",
        ],
        "Sudden and accidental water damage from a burst pipe is covered under your home "
        "policy, minus your deductible. Damage from slow leaks or lack of maintenance is not. "
        "Next step: stop the water, take photos, and file a claim in the app.",
        "Water damage is never covered by home insurance; you need a separate flood policy.",
    ),
    (
        "home",
        [
            "Does my home insurance cover flooding?",
            "Am I covered if my basement floods after a storm?",
        ],
        "Standard home policies do not cover flood damage from rising water; that needs a "
        "separate flood policy. Water that enters through a storm-damaged roof is covered. "
        "Next step: ask us for a flood insurance quote.",
        "Yes, flooding is fully covered by every home policy.",
    ),
    (
        "account",
        [
            "How do I add my teenage son to my auto policy?",
            "My daughter just got her license, how do I add her?",
        ],
        "You can add a newly licensed driver in the app under Policy > Drivers, or by phone. "
        "We need their name, date of birth and license number; the premium change shows "
        "before you confirm. Next step: add the driver in the app.",
        "New drivers under 21 cannot be added to a family policy.",
    ),
    (
        "account",
        [
            "How do I cancel my policy?",
            "I sold my car, how can I cancel the insurance on it?",
        ],
        "You can cancel at any time by phone or in the app under Policy > Cancel; unused "
        "premium is refunded pro rata. If you sold the car, you can also just remove it and "
        "keep the policy. Next step: choose a cancellation date in the app.",
        "Policies can only be cancelled at renewal, and there is no refund.",
    ),
]

COMPLAINTS = [
    "This is the third time I've asked and nobody answers. I want to file a complaint.",
    "Your adjuster was rude to me on the phone. How do I complain?",
]
COMPLAINT_ANSWER = (
    "I'm sorry about your experience. You can file a formal complaint in the app under Help > "
    "Complaints or by writing to complaints@harbormutual.example; a supervisor responds within "
    "two business days. Next step: submit the complaint form so it is tracked."
)
COMPLAINT_WRONG = "Complaints are not accepted through this channel."

NAMES = ["Maria Lopez", "James Chen", "Aisha Khan", "Tom Becker", "Priya Nair", "Lucas Silva"]


def demo_items(count: int = 300, seed: int = 7) -> Iterator[tuple[dict[str, Any], str]]:
    """(output as the ingest API takes it, the right answer in house style). About one in five
    outputs is wrong; the right answer is what a demo reviewer corrects it to."""
    rng = random.Random(seed)
    for index in range(count):
        complaint = rng.random() < 0.06
        if complaint:
            topic, question = "complaint", rng.choice(COMPLAINTS)
            right, wrong = COMPLAINT_ANSWER, COMPLAINT_WRONG
        else:
            topic, questions, right, wrong = rng.choice(SCENARIOS)
            question = rng.choice(questions)
        if rng.random() < 0.15:
            name = rng.choice(NAMES)
            email = name.lower().replace(" ", ".") + "@example.com"
            question = f"Hi, this is {name} ({email}). {question}"
        is_wrong = rng.random() < 0.2
        answer = wrong if is_wrong else right
        confidence = round(rng.uniform(0.3, 0.7) if is_wrong else rng.uniform(0.55, 0.99), 3)
        channel = rng.choice(["chat", "chat", "email", "app"])
        tags = [topic] + (["complaint"] if complaint else [])
        payload = {
            "external_id": f"hm-{seed}-{index:05d}",
            "source": "harbor-support",
            "model_name": "harbor-assistant",
            "model_version": "v1",
            "input": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": question},
            ],
            "output": answer,
            "confidence": confidence,
            "metadata": {"channel": channel, "customer_tier": rng.choice(["standard", "plus"])},
            "tags": tags,
            "priority": 5 if complaint else 0,
        }
        yield payload, right


def demo_outputs(count: int = 300, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Outputs as the ingest API takes them. About one in five answers is wrong."""
    for payload, _right in demo_items(count, seed):
        yield payload


def demo_right_answers(count: int = 300, seed: int = 7) -> dict[str, str]:
    """external_id -> the answer a careful reviewer settles on (house style)."""
    return {payload["external_id"]: right for payload, right in demo_items(count, seed)}
