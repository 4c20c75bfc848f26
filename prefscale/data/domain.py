"""The embedded demo domain: Lumora, a fictional home-internet and mobile provider.

Everything here is deterministic from a seed. It yields

* a pool of customer-support prompts across four task types, and
* a pre-training corpus of (prompt, response) pairs whose responses vary independently along the axes the
  SMEs care about (company mention, list format, the acknowledge → steps → follow-up workflow, answering with
  a question, sensitive words, heavy adjectives, thanking the customer),

so that a tiny model trained on the corpus samples every style and preference optimisation has something to
choose between.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import polars as pl

COMPANY = "Lumora"
TASK_TYPES: tuple[str, ...] = ("troubleshooting", "billing", "plan_question", "complaint")

# --- prompt grammar -----------------------------------------------------------------------------------------

_DEVICES = ["router", "modem", "phone", "tv box", "wifi extender", "sim card", "smart hub", "laptop"]
_SYMPTOMS = [
    "keeps dropping the connection",
    "restarts on its own",
    "shows a red light",
    "is very slow",
    "will not connect to wifi",
    "loses signal",
    "freezes",
    "makes a clicking noise",
]
_WHEN = [
    "every evening",
    "since the last update",
    "when it rains",
    "at random times",
    "every morning",
    "after i moved house",
    "during video calls",
]
_AMOUNTS = ["$12", "$15", "$20", "$25", "$30", "$45", "$60", "$9"]
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october"]
_BILL_ISSUES = [
    "i was charged {amount} twice on my {month} bill",
    "my {month} bill went up by {amount}",
    "there is a {amount} fee on my {month} bill i do not recognise",
    "my autopay failed in {month} and now i owe {amount}",
    "i got a late fee of {amount} in {month}",
]
_BILL_ASKS = [
    "why is that?",
    "can you fix it?",
    "what happened?",
    "how do i get a refund?",
    "please explain.",
]
_PLANS = ["basic", "plus", "family", "unlimited", "fibre 500", "fibre 1000"]
_FEATURES = [
    "international calls",
    "a static ip",
    "hotspot data",
    "streaming in 4k",
    "a free router",
    "roaming in europe",
    "parental controls",
]
_PLAN_ASKS = [
    "does the {plan} plan include {feature}?",
    "can i switch from {plan} to {plan2} without a fee?",
    "what is the difference between {plan} and {plan2}?",
    "how do i add {feature} to my {plan} plan?",
    "is {feature} available on the {plan} plan?",
]
_WAITS = ["two days", "a week", "three hours", "ten days", "all morning", "since monday"]
_COMPLAINTS = [
    "i have been waiting {wait} for a technician and nobody came.",
    "your support line hung up on me {count} times today.",
    "my {device} was replaced {count} times and it still {symptom}.",
    "i was promised a call back {wait} ago and heard nothing.",
    "the shop sold me a {device} that {symptom}.",
]
_COUNTS = ["two", "three", "four", "five"]
_OPENERS = ["", "hi, ", "hello, ", "hey, ", "good morning, "]


def _prompt_space(task: str) -> list[str]:
    """All prompts of one task type (the combinatorial grammar, in a stable order)."""
    out: list[str] = []
    if task == "troubleshooting":
        for o, d, s, w in itertools.product(_OPENERS, _DEVICES, _SYMPTOMS, _WHEN):
            out.append(f"{o}my {d} {s} {w}. what should i do?")
    elif task == "billing":
        for o, b, a, m, k in itertools.product(_OPENERS, _BILL_ISSUES, _AMOUNTS, _MONTHS, _BILL_ASKS):
            out.append(o + b.format(amount=a, month=m) + ". " + k)
    elif task == "plan_question":
        for o, q, p, p2, f in itertools.product(_OPENERS, _PLAN_ASKS, _PLANS, _PLANS, _FEATURES):
            if p != p2:
                out.append(o + q.format(plan=p, plan2=p2, feature=f))
    elif task == "complaint":
        for o, c, w, n, d, s in itertools.product(
            _OPENERS, _COMPLAINTS, _WAITS, _COUNTS, _DEVICES, _SYMPTOMS
        ):
            out.append(o + c.format(wait=w, count=n, device=d, symptom=s))
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"unknown task type {task!r}")
    return sorted(set(out))


def _balanced(n: int, capacity: list[int]) -> list[int]:
    """`n` split as evenly as possible over bins of the given capacities (a full bin's share goes to the rest)."""
    take = [0] * len(capacity)
    open_bins = [i for i, c in enumerate(capacity) if c > 0]
    left = n
    while left and open_bins:
        share, extra = divmod(left, len(open_bins))
        for j, i in enumerate(open_bins):
            add = min(share + (1 if j < extra else 0), capacity[i] - take[i])
            take[i] += add
            left -= add
        open_bins = [i for i in open_bins if take[i] < capacity[i]]
    return take


def make_prompt_pool(n: int, seed: int) -> pl.DataFrame:
    """`n` distinct prompts, balanced over task types, as columns `prompt_id, task_type, prompt`."""
    if n < len(TASK_TYPES):
        raise ValueError(f"prompt pool size must be >= {len(TASK_TYPES)}, got {n}")
    spaces = [_prompt_space(task) for task in TASK_TYPES]
    if n > (most := sum(len(s) for s in spaces)):
        raise ValueError(f"data.pool_size {n} is over the {most} distinct prompts the embedded domain holds")
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    for task, space, k in zip(TASK_TYPES, spaces, _balanced(n, [len(s) for s in spaces]), strict=True):
        rows.extend((task, p) for p in rng.sample(space, k))
    rng.shuffle(rows)
    return pl.DataFrame(
        {
            "prompt_id": [f"p{i:06d}" for i in range(len(rows))],
            "task_type": [t for t, _ in rows],
            "prompt": [p for _, p in rows],
        }
    )


# --- response grammar ---------------------------------------------------------------------------------------

_THANKS = [
    "Thank you for reaching out.",
    "Thanks for contacting us.",
    "Thank you for your patience.",
    "Thanks for letting us know.",
]
_ACK = {
    "troubleshooting": [
        "I understand how annoying it is when your {device} {symptom}.",
        "I am sorry your {device} {symptom}.",
        "I understand, a {device} that {symptom} is frustrating.",
    ],
    "billing": [
        "I understand a surprise on your bill is worrying.",
        "I am sorry about the confusion with your bill.",
        "I understand, billing mistakes are stressful.",
    ],
    "plan_question": [
        "I understand you want the right plan.",
        "Good question about your plan.",
        "I understand you want to know what your plan covers.",
    ],
    "complaint": [
        "I am sorry we let you down.",
        "I understand how disappointing this is.",
        "I am truly sorry about this experience.",
    ],
}
_STEPS = {
    "troubleshooting": [
        "unplug the {device} for thirty seconds",
        "plug it back in and wait two minutes",
        "check that every cable is firmly connected",
        "move the {device} away from other electronics",
        "run the speed test in the app",
        "install the latest update in the app",
    ],
    "billing": [
        "open the billing page in the app",
        "compare the charge with your last invoice",
        "select the charge and choose dispute",
        "confirm your card details under autopay",
        "we will refund any duplicate charge within five days",
        "download the invoice for your records",
    ],
    "plan_question": [
        "open the plans page in the app",
        "compare the features of each plan",
        "choose switch plan and confirm",
        "the change starts on your next billing day",
        "add extras under the options tab",
        "check the price before you confirm",
    ],
    "complaint": [
        "we have logged a priority ticket for you",
        "a senior agent will call you within one day",
        "we have added a credit to your account",
        "we will book a new technician visit",
        "you can track the ticket in the app",
        "we have shared your feedback with the local team",
    ],
}
_PROSE_LINKS = ["First, {a}. Then {b}.", "First, {a}. After that, {b}."]
_PROSE_LINKS_3 = ["First, {a}. Then {b}. Finally, {c}.", "First, {a}, then {b}, and after that {c}."]
_FOLLOWUP = [
    "Let me know if there is anything else I can help with.",
    "Reply here if the problem continues and we will follow up.",
    "We are here if you need more help.",
    "Is there anything else I can help with?",
]
_COMPANY_LINES = [
    f"{COMPANY} support is here to help.",
    f"At {COMPANY} we want this fixed quickly.",
    f"The {COMPANY} team is on it.",
]
_SIGNATURE = f"- {COMPANY} Support"
_QUESTION_BACK = {
    "troubleshooting": ["Have you tried restarting the {device}?", "Did you check the cables?"],
    "billing": ["Did you read your contract?", "Have you checked the invoice yourself?"],
    "plan_question": ["Have you looked at the plans page?", "Why do you want to change?"],
    "complaint": ["Did you call the right number?", "Are you sure nobody came?"],
}
_SENSITIVE = [
    "Obviously this is not our fault.",
    "Calm down, this is a simple problem.",
    "That was a stupid mistake.",
    "We cannot guarantee anything.",
    "A lawsuit will not help you here.",
    "Honestly, this is your own fault.",
]
_ADJ_PHRASES = [
    "Our amazing, fantastic, incredible team",
    "Our wonderful, brilliant, outstanding staff",
    "This superb, remarkable, extraordinary service",
]
_ADJ_TAILS = ["is always ready.", "will sort it out.", "loves to help."]


@dataclass(frozen=True)
class StyleMix:
    """Probability of each style axis in the pre-training corpus (independent draws)."""

    thanks: float = 0.45
    acknowledge: float = 0.55
    company: float = 0.45
    list_format: float = 0.45
    followup: float = 0.55
    question_back: float = 0.35
    sensitive: float = 0.3
    adjectives: float = 0.35
    out_of_order: float = 0.15


def _slots(prompt: str) -> dict[str, str]:
    device = next((d for d in _DEVICES if d in prompt), "device")
    symptom = next((s for s in _SYMPTOMS if s in prompt), "stops working")
    return {"device": device, "symptom": symptom}


def make_response(prompt: str, task_type: str, rng: random.Random, mix: StyleMix | None = None) -> str:
    """One response to `prompt`, its style axes drawn independently from `mix`."""
    mix = mix or StyleMix()
    slots = _slots(prompt)
    parts: list[str] = []
    if rng.random() < mix.thanks:
        parts.append(rng.choice(_THANKS))
    if rng.random() < mix.question_back:
        # Answers the question with a question; sometimes that is all it does.
        parts.append(rng.choice(_QUESTION_BACK[task_type]).format(**slots))
        if rng.random() < 0.5:
            if rng.random() < mix.company:
                parts.append(_SIGNATURE)
            return "\n".join(parts)
    ack = rng.random() < mix.acknowledge
    if ack:
        parts.append(rng.choice(_ACK[task_type]).format(**slots))
    if rng.random() < mix.company:
        parts.append(rng.choice(_COMPANY_LINES))
    if rng.random() < mix.adjectives:
        parts.append(f"{rng.choice(_ADJ_PHRASES)} {rng.choice(_ADJ_TAILS)}")
    if rng.random() < mix.sensitive:
        parts.append(rng.choice(_SENSITIVE))
    followup = rng.choice(_FOLLOWUP) if rng.random() < mix.followup else None
    if followup and rng.random() < mix.out_of_order:
        parts.append(followup)
        followup = None
    n_steps = rng.choice([2, 3, 3])
    steps = [s.format(**slots) for s in rng.sample(_STEPS[task_type], n_steps)]
    if rng.random() < mix.list_format:
        parts.append("\n".join(f"{i}. {s[0].upper()}{s[1:]}." for i, s in enumerate(steps, 1)))
    elif n_steps == 2:
        parts.append(rng.choice(_PROSE_LINKS).format(a=steps[0], b=steps[1]))
    else:
        parts.append(rng.choice(_PROSE_LINKS_3).format(a=steps[0], b=steps[1], c=steps[2]))
    if followup:
        parts.append(followup)
    if rng.random() < mix.company * 0.5:
        parts.append(_SIGNATURE)
    return "\n".join(parts)


def make_corpus(prompts: pl.DataFrame, responses_per_prompt: int, seed: int) -> pl.DataFrame:
    """Pre-training corpus: `responses_per_prompt` responses per prompt (`prompt`, `task_type`, `response`)."""
    rng = random.Random(seed)
    rows = [
        (p, t, make_response(p, t, rng))
        for p, t in zip(prompts["prompt"], prompts["task_type"], strict=True)
        for _ in range(responses_per_prompt)
    ]
    return pl.DataFrame(
        {"prompt": [r[0] for r in rows], "task_type": [r[1] for r in rows], "response": [r[2] for r in rows]}
    )
