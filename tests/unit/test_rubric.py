from __future__ import annotations

import math

import pytest

from prefscale.evaluation import rubric

GOOD = (
    "Thank you for reaching out.\n"
    "I am sorry your router keeps dropping the connection.\n"
    "At Lumora we want this fixed quickly.\n"
    "1. Unplug the router for thirty seconds.\n"
    "2. Plug it back in and wait two minutes.\n"
    "Is there anything else I can help with?"
)
BAD = "Have you tried restarting the router?\nObviously this is not our fault."


def test_preferences_are_the_seven_detector_keys():
    assert len(rubric.PREFERENCES) == 7
    assert tuple(rubric.detect(GOOD)) == rubric.PREFERENCES


def test_detect_good_response_satisfies_everything():
    assert rubric.detect(GOOD) == dict.fromkeys(rubric.PREFERENCES, True)


def test_detect_bad_response():
    assert rubric.detect(BAD) == {
        "mentions_company": False,
        "list_format": False,
        "follows_workflow": False,
        "no_question_back": False,
        "no_sensitive_words": False,
        "no_heavy_adjectives": True,
        "thanks_customer": False,
    }


@pytest.mark.parametrize("text", ["", None])
def test_detect_empty(text):
    d = rubric.detect(text)
    assert d["mentions_company"] is False
    assert d["list_format"] is False
    assert d["follows_workflow"] is False
    assert d["no_question_back"] is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Lumora team is on it.", True),
        ("the LUMORA team is on it.", True),
        ("The support team is on it.", False),
    ],
)
def test_mentions_company(text, expected):
    assert rubric.detect(text)["mentions_company"] is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Steps:\n1. Unplug it.\n2. Plug it in.", True),
        ("Steps:\n1) Unplug it.\n2) Plug it in.", True),
        ("Steps:\n- Unplug it.\n- Plug it in.", True),
        ("Steps:\n1. Unplug it and plug it in.", False),
        ("First, unplug it. Then plug it in.", False),
        # The signature line looks like a bullet but is not a list item.
        ("1. Unplug it and plug it in.\n- Lumora Support", False),
    ],
)
def test_list_format(text, expected):
    assert rubric.detect(text)["list_format"] is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # acknowledge → steps (list) → follow-up
        ("I understand.\n1. Unplug it.\n2. Plug it in.\nLet me know if it helps.", True),
        # acknowledge → steps (prose) → follow-up
        ("I am sorry about that. First, unplug it. Then plug it in. Reply here if it continues.", True),
        # a follow-up question is not answering with a question
        ("Sorry about that.\n1. Unplug it.\n2. Plug it in.\nIs there anything else I can help with?", True),
        # follow-up before the steps
        ("I understand. Let me know if it helps.\n1. Unplug it.\n2. Plug it in.", False),
        # steps before the acknowledgement
        ("1. Unplug it.\n2. Plug it in.\nI understand.\nLet me know if it helps.", False),
        # no acknowledgement
        ("1. Unplug it.\n2. Plug it in.\nLet me know if it helps.", False),
        # no follow-up
        ("I understand.\n1. Unplug it.\n2. Plug it in.", False),
        # no steps
        ("I understand. Let me know if it helps.", False),
        # right order, but it also answers with a question
        ("I understand. Did you check the cables?\n1. Unplug it.\n2. Plug it in.\nLet me know.", False),
    ],
)
def test_follows_workflow(text, expected):
    assert rubric.detect(text)["follows_workflow"] is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Have you tried restarting the router?", False),
        ("I understand. Why do you want to change?\nFirst, open the app.", False),
        ("Is there anything else I can help with?", True),
        ("Unplug it. Let me know if there is anything else?", True),
        ("Unplug the router. Plug it back in.", True),
    ],
)
def test_no_question_back(text, expected):
    assert rubric.detect(text)["no_question_back"] is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Obviously this is not our fault.", False),
        ("Calm down, this is a simple problem.", False),
        ("That was a stupid mistake.", False),
        ("We cannot guarantee anything.", False),
        ("Honestly, this is your own fault.", False),
        ("We will fix this for you today.", True),
    ],
)
def test_no_sensitive_words(text, expected):
    assert rubric.detect(text)["no_sensitive_words"] is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Our amazing, fantastic, incredible team is always ready.", False),
        ("This superb and remarkable service.", False),
        ("Our amazing team is always ready.", True),
        ("Our team is always ready.", True),
    ],
)
def test_no_heavy_adjectives(text, expected):
    assert rubric.detect(text)["no_heavy_adjectives"] is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thank you for reaching out.", True),
        ("Thanks for contacting us.", True),
        ("THANK YOU.", True),
        ("We are thankful for your business.", False),
        ("We will fix it.", False),
    ],
)
def test_thanks_customer(text, expected):
    assert rubric.detect(text)["thanks_customer"] is expected


def test_score_prefers_good_over_bad():
    for task in ("troubleshooting", "billing", "plan_question", "complaint"):
        assert rubric.score(GOOD, task) > rubric.score(BAD, task) + 3


def test_score_penalises_unfinished_by_three():
    assert rubric.score(GOOD, "billing", finished=False) == pytest.approx(rubric.score(GOOD, "billing") - 3.0)


def test_score_penalises_sensitive_words_and_questions():
    base = "I understand.\n1. Unplug the router for thirty seconds.\n2. Plug it back in.\nLet me know."
    assert rubric.score(base, "troubleshooting") > rubric.score(
        base + "\nObviously not our fault.", "troubleshooting"
    )
    assert rubric.score(base, "troubleshooting") > rubric.score(
        "Did you check the cables?\n" + base, "troubleshooting"
    )


def test_score_penalises_short_and_repeated_responses():
    # 11 words vs the same 11 words plus one: the short one loses the 1.5 penalty.
    short = "We will look into your bill and fix it very soon."
    assert rubric.score(short + " Okay.", "billing") - rubric.score(short, "billing") == pytest.approx(1.5)
    long = "We will look into your bill and fix it very soon for you."
    assert rubric.score(long + "\n" + long, "billing") == pytest.approx(rubric.score(long, "billing") - 1.0)


def test_win_rate_counts():
    model = [(GOOD, "billing", True), (BAD, "billing", True), (GOOD, "billing", True)]
    baseline = [(BAD, "billing", True), (GOOD, "billing", True), (GOOD, "billing", True)]
    assert rubric.win_rate(model, baseline) == (0.5, 1, 1, 1)
    assert rubric.win_rate(model[:1], baseline[:1]) == (1.0, 1, 0, 0)
    assert rubric.win_rate(baseline[:1], model[:1]) == (0.0, 0, 1, 0)


def test_win_rate_counts_unfinished_as_worse():
    wr = rubric.win_rate([(GOOD, "complaint", False)], [(GOOD, "complaint", True)])
    assert wr == (0.0, 0, 1, 0)


def test_win_rate_empty_is_nan():
    wr, wins, losses, draws = rubric.win_rate([], [])
    assert math.isnan(wr)
    assert (wins, losses, draws) == (0, 0, 0)


def test_win_rate_rejects_misaligned():
    with pytest.raises(ValueError, match="aligned"):
        rubric.win_rate([(GOOD, "billing", True)], [])
