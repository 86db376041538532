"""Realistic demo traffic: an insurance customer-support assistant ("Harbor Mutual"), some of
whose answers are wrong. Deterministic from a seed, so every demo looks the same.

Each scenario has several question templates and slots (vehicle, city, day, family member…),
so a few hundred outputs are a few hundred different conversations: the dataset pipeline's
near-duplicate step keeps most of them. The right answers share one house style — the direct
answer first, one detail, then "Next step: …" — which the base model does not have, so a model
fine-tuned on the corrections measurably moves towards it.
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Harbor Mutual's published contact details, as the right answers give them: not personal data,
# so the dataset pipeline is told never to mask them (SIGNOFF_PII_ALLOW, `pii_allow`).
PUBLIC_CONTACTS = ("1-800-555-0142", "complaints@harbormutual.example")

SYSTEM_PROMPT = (
    "You are Harbor Mutual's customer support assistant. Answer in two or three short "
    "sentences, start with the direct answer, and end with the next step the customer can take."
)

VEHICLES = [
    "2019 Honda Civic",
    "2021 Toyota RAV4",
    "2016 Ford F-150",
    "2020 Tesla Model 3",
    "2018 Subaru Outback",
    "2022 Kia Sportage",
    "2015 Volkswagen Golf",
    "2017 Mazda CX-5",
    "2023 Hyundai Tucson",
    "2014 Jeep Wrangler",
]
CITIES = [
    "Denver",
    "Austin",
    "Portland",
    "Columbus",
    "Raleigh",
    "Phoenix",
    "Madison",
    "Tampa",
    "Boise",
    "Richmond",
]
WHEN = [
    "this morning",
    "last night",
    "on Saturday",
    "yesterday afternoon",
    "an hour ago",
    "on my way to work",
    "over the weekend",
]
RELATIVES = ["son", "daughter", "wife", "husband", "partner", "nephew"]
NAMES = [
    "Maria Lopez",
    "James Chen",
    "Aisha Khan",
    "Tom Becker",
    "Priya Nair",
    "Lucas Silva",
    "Emma Novak",
    "Daniel Okafor",
]
ROOMS = ["kitchen", "basement", "upstairs bathroom", "laundry room", "garage"]
PETS = ["dog", "cat"]


@dataclass(frozen=True)
class Scenario:
    topic: str
    questions: tuple[str, ...]
    right: str
    wrong: tuple[str, ...]


SCENARIOS = [
    Scenario(
        "claims",
        (
            "I had a fender bender in {city} {when} with my {vehicle}. How do I start a claim?",
            "Someone backed into my {vehicle} in a parking lot in {city}. What do I do now?",
            "How do I report an accident? My {vehicle} was hit {when}.",
            "My {vehicle} got rear-ended {when}, is there a deadline to file a claim?",
        ),
        "You can start a claim for your {vehicle} in the Harbor Mutual app under Claims > New "
        "claim, or by phone 24/7. Have photos of the damage and the other driver's details "
        "ready. Next step: open the app and start the claim; an adjuster contacts you within "
        "one business day.",
        (
            "You need to visit a branch office in person within 24 hours to file a claim for "
            "your {vehicle}. Claims reported later than that cannot be accepted.",
            "Accidents happen to everyone, and it's important to stay calm and make sure "
            "everyone is safe. There are many things to consider after an accident in {city}, "
            "such as exchanging information and taking pictures.",
        ),
    ),
    Scenario(
        "claims",
        (
            "How long will it take to get paid for the claim on my {vehicle}?",
            "My claim from {when} was approved. When will I see the money?",
            "I filed a claim for hail damage on my {vehicle} in {city}, when does it pay out?",
        ),
        "Approved claims are usually paid within 5 to 10 business days after the adjuster's "
        "assessment; claims with injuries can take longer. Next step: track the payment under "
        "Claims in the app.",
        (
            "All claims are paid within 24 hours, guaranteed.",
            "Payment timing depends on many factors and it is hard to say. Claims can take "
            "anywhere from a few days to several months depending on the situation.",
        ),
    ),
    Scenario(
        "policy",
        (
            "What's the collision deductible on my {vehicle}?",
            "If I crash my {vehicle}, how much do I pay before insurance kicks in?",
            "I live in {city} and drive a {vehicle}. What is a standard collision deductible?",
        ),
        "On a standard auto policy the collision deductible is $500, unless you chose a "
        "different amount when you bought it. Your exact figure is on the declarations page. "
        "Next step: open Policy > Documents in the app to check it.",
        (
            "There is no deductible for collision on any of our policies.",
            "The collision deductible on a standard policy is $1,000 and it cannot be changed.",
        ),
    ),
    Scenario(
        "policy",
        (
            "Am I covered if I rent a car on vacation in {city}?",
            "My {vehicle} is in the shop. Does my policy cover a rental car?",
            "Does my insurance extend to a rental car I drive {when}?",
        ),
        "Yes: your liability and collision coverage extend to a rental car you drive for "
        "personal use in the US and Canada. Rental reimbursement while your own car is repaired "
        "is a separate add-on. Next step: check Policy > Coverages to see whether you have it.",
        (
            "Rental cars are never covered; you must buy the rental company's insurance.",
            "Rental car coverage is a complicated topic and there are many different kinds of "
            "coverage that may or may not apply to your situation.",
        ),
    ),
    Scenario(
        "billing",
        (
            "Can I move my payment date to the {day}th? It's {name} on policy {policy}.",
            "I get paid on the {day}th, can I change when my premium is due?",
            "Is it possible to pay on the {day}th of each month instead of the 1st?",
        ),
        "Yes, you can move your payment date once per policy term to any day from the 1st to "
        "the 28th. The change applies from the next billing cycle. Next step: go to Billing > "
        "Payment schedule in the app.",
        (
            "Payment dates are fixed by law and cannot be changed.",
            "You can change your payment date as often as you like to any day of the month, "
            "including the 31st.",
        ),
    ),
    Scenario(
        "billing",
        (
            "Why did my premium go up at renewal? I haven't had an accident in my {vehicle}.",
            "My renewal price in {city} jumped this year, what happened?",
            "The premium for my {vehicle} is higher than last year. Why?",
        ),
        "Premiums can change at renewal because of claims in your area, repair costs, or "
        "changes to your driving record or vehicle; your renewal notice lists the factors that "
        "applied to you. Next step: call us to review the discounts you may qualify for.",
        (
            "Your premium went up because you filed a claim last year.",
            "Prices go up every year for everyone, there is nothing that can be done about it.",
        ),
    ),
    Scenario(
        "roadside",
        (
            "My {vehicle} broke down on the highway near {city}. What do I do?",
            "I need a tow for my {vehicle}, it won't start. Do you offer roadside help?",
            "Flat tire {when} outside {city}, can someone come help?",
        ),
        "If you have roadside assistance, request help in the app under Roadside or call "
        "1-800-555-0142; towing up to 15 miles is included. Stay in a safe place away from "
        "traffic. Next step: open Roadside in the app to share your location.",
        (
            "We do not offer roadside assistance; please call a private towing company.",
            "Roadside assistance includes unlimited towing to any garage you choose.",
        ),
    ),
    Scenario(
        "home",
        (
            "A pipe burst in my {room} {when}. Is the water damage covered?",
            "Water is leaking through the ceiling of my {room} from a burst pipe. Am I covered?",
            "Does my home policy in {city} pay for damage from a frozen pipe in the {room}?",
        ),
        "Sudden and accidental water damage from a burst pipe is covered by your home policy, "
        "minus your deductible; damage from slow leaks or lack of maintenance is not. Next "
        "step: stop the water, take photos, and file a claim in the app.",
        (
            "Water damage is never covered by home insurance; you need a separate flood policy.",
            "All water damage of any kind is always fully covered with no deductible.",
        ),
    ),
    Scenario(
        "home",
        (
            "My {room} flooded after the storm in {city}. Will my home insurance pay?",
            "Does my home policy cover flooding from a river near my house in {city}?",
            "Heavy rain {when} flooded my {room}. Is that covered?",
        ),
        "Standard home policies do not cover flood damage from rising water; that needs a "
        "separate flood policy. Water that comes in through a storm-damaged roof is covered. "
        "Next step: ask us for a flood insurance quote.",
        (
            "Yes, flooding is fully covered by every home policy.",
            "Floods are a natural disaster and natural disasters are always covered.",
        ),
    ),
    Scenario(
        "account",
        (
            "My {relative} just got their license. How do I add them to the policy on my "
            "{vehicle}?",
            "How do I add my {relative} as a driver? It's {name}, policy {policy}.",
            "Can my {relative} drive my {vehicle} if I add them to my policy?",
        ),
        "You can add a driver in the app under Policy > Drivers, or by phone. We need their "
        "name, date of birth and license number, and you see the new premium before you "
        "confirm. Next step: add the driver in the app.",
        (
            "New drivers under 21 cannot be added to a family policy.",
            "Anyone can drive your car at any time without being added to the policy.",
        ),
    ),
    Scenario(
        "account",
        (
            "I sold my {vehicle} {when}. How do I cancel its insurance?",
            "How can I cancel my policy? I'm moving away from {city}.",
            "I want to cancel the policy on my {vehicle}, do I get money back?",
        ),
        "You can cancel at any time in the app under Policy > Cancel or by phone, and unused "
        "premium is refunded pro rata. If you sold the car you can also just remove it and keep "
        "the policy. Next step: choose a cancellation date in the app.",
        (
            "Policies can only be cancelled at renewal, and there is no refund.",
            "To cancel you must send a signed letter by mail and pay a $200 cancellation fee.",
        ),
    ),
    Scenario(
        "pets",
        (
            "My {pet} needs surgery after eating something {when}. Does pet insurance cover it?",
            "Is an emergency vet visit in {city} covered for my {pet}?",
        ),
        "Accident and illness plans cover emergency surgery for your {pet} after the 14-day "
        "waiting period, minus your deductible; routine care is a separate add-on. Next step: "
        "send the vet's invoice with a claim in the app.",
        (
            "Pet insurance only covers vaccinations, not surgery.",
            "Every vet bill is reimbursed at 100% with no waiting period.",
        ),
    ),
]

COMPLAINTS = Scenario(
    "complaint",
    (
        "This is the third time I've asked about my claim and nobody answers. I want to "
        "complain. I'm {name}.",
        "Your adjuster in {city} was rude to me on the phone {when}. How do I complain?",
        "I'm unhappy with how my claim for the {vehicle} was handled, who do I complain to?",
    ),
    "I'm sorry about your experience. You can file a formal complaint in the app under Help > "
    "Complaints or by writing to complaints@harbormutual.example; a supervisor responds within "
    "two business days. Next step: submit the complaint form so it is tracked.",
    (
        "Complaints are not accepted through this channel.",
        "We do not accept complaints about adjusters.",
    ),
)


def _fill(template: str, slots: dict[str, str]) -> str:
    return template.format(**slots)


def _slots(rng: random.Random) -> dict[str, str]:
    return {
        "vehicle": rng.choice(VEHICLES),
        "city": rng.choice(CITIES),
        "when": rng.choice(WHEN),
        "relative": rng.choice(RELATIVES),
        "name": rng.choice(NAMES),
        "room": rng.choice(ROOMS),
        "pet": rng.choice(PETS),
        "day": str(rng.randint(2, 28)),
        "policy": f"HM-{rng.randint(100000, 999999)}",
    }


def demo_items(count: int = 300, seed: int = 7) -> Iterator[tuple[dict[str, Any], str]]:
    """(output as the ingest API takes it, the right answer in house style). About one in four
    outputs is wrong, in its facts or in its style; the right answer is what a careful
    reviewer corrects it to."""
    rng = random.Random(seed)
    for index in range(count):
        complaint = rng.random() < 0.06
        scenario = COMPLAINTS if complaint else rng.choice(SCENARIOS)
        slots = _slots(rng)
        question = _fill(rng.choice(scenario.questions), slots)
        if rng.random() < 0.12:
            email = slots["name"].lower().replace(" ", ".") + "@example.com"
            question = f"Hi, this is {slots['name']} ({email}). {question}"
        right = _fill(scenario.right, slots)
        is_wrong = rng.random() < 0.25
        answer = _fill(rng.choice(scenario.wrong), slots) if is_wrong else right
        confidence = round(rng.uniform(0.3, 0.75) if is_wrong else rng.uniform(0.55, 0.99), 3)
        tags = [scenario.topic] + (["complaint"] if complaint else [])
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
            "metadata": {
                "channel": rng.choice(["chat", "chat", "email", "app"]),
                "customer_tier": rng.choice(["standard", "plus"]),
            },
            "tags": tags,
            "priority": 5 if complaint else 0,
        }
        yield payload, right


def demo_outputs(count: int = 300, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Outputs as the ingest API takes them."""
    for payload, _right in demo_items(count, seed):
        yield payload


def demo_right_answers(count: int = 300, seed: int = 7) -> dict[str, str]:
    """external_id -> the answer a careful reviewer settles on (house style)."""
    return {payload["external_id"]: right for payload, right in demo_items(count, seed)}


def demo_regression_set() -> list[dict[str, str]]:
    """A channel's fixed regression questions, answered in the same house style as the
    reviewers' corrections (fixed slots, so the set never changes)."""
    slots = {
        "vehicle": "2018 Subaru Outback",
        "city": "Madison",
        "when": "on Saturday",
        "relative": "daughter",
        "name": "Emma Novak",
        "room": "basement",
        "pet": "dog",
        "day": "15",
        "policy": "HM-424242",
    }
    picks = [(2, 1), (1, 0), (6, 1), (4, 1), (7, 0)]  # (scenario, question template)
    return [
        {
            "prompt": _fill(SCENARIOS[s].questions[q], slots),
            "reference": _fill(SCENARIOS[s].right, slots),
        }
        for s, q in picks
    ]
