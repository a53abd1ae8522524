"""The reply judge: its logic on the tiny model, and on the embedded model that every bad kind of reply fails and a
real answer passes."""

from __future__ import annotations

import dataclasses
import math

import pytest

from flowsteer.evals import JudgeCalibration, Verdict, judge_replies, success_rate
from flowsteer.evals.judge import calibration_replies, default_calibration
from flowsteer.refusal.judge import is_refusal

POOL = ("Name a colour.", "Explain how tides work.", "Write a haiku about rain.", "Give me a pasta recipe.",
        "How do I tie a tie?", "What is a prime number?", "Describe a cat.")


def test_calibration_fits_saves_and_loads(tiny, tmp_path):
    instructions, replies = calibration_replies(tiny, POOL, max_new_tokens=6)
    calibration = JudgeCalibration.fit(tiny, instructions, replies)
    assert calibration.pool == POOL and len(instructions) == 2 * len(POOL)
    assert all(math.isfinite(v) for v in (calibration.nll_bound, calibration.repetition_bound, calibration.pmi_bound))
    assert calibration.fitted_on["replies"] == 2 * len(POOL)
    calibration.save(tmp_path / "c.json")
    assert JudgeCalibration.load(tmp_path / "c.json") == calibration
    with pytest.raises(ValueError, match="distinct instructions"):
        JudgeCalibration.fit(tiny, POOL[:3], ["a", "b", "c"])


def test_verdict_flags_follow_the_bounds(tiny):
    open_bounds = JudgeCalibration(nll_bound=math.inf, repetition_bound=1.0, pmi_bound=-math.inf, pool=POOL)
    replies = ["I'm sorry, but I can't help with that.", "the the the the the the the", "Red.", ""]
    verdicts = judge_replies(["Name a colour."] * 4, replies, reference_model=tiny, calibration=open_bounds)
    assert [v.refused for v in verdicts] == [True, False, False, False]
    assert [v.success for v in verdicts] == [False, True, True, False]  # an empty reply never succeeds
    strict = dataclasses.replace(open_bounds, repetition_bound=0.5)
    assert not judge_replies(["Name a colour."], replies[1:2], reference_model=tiny, calibration=strict)[0].coherent
    off = dataclasses.replace(open_bounds, pmi_bound=math.inf)
    verdict = judge_replies(["Name a colour."], ["Red."], reference_model=tiny, calibration=off)[0]
    assert not verdict.on_topic and not verdict.success and isinstance(verdict, Verdict)
    assert success_rate(verdicts) == 0.5
    with pytest.raises(ValueError, match="2 instructions but 1 replies"):
        judge_replies(["a", "b"], ["c"], reference_model=tiny, calibration=open_bounds)


def test_a_model_without_calibration_is_fitted_on_the_given_instructions(tiny, monkeypatch, tmp_path):
    from flowsteer.evals import judge

    monkeypatch.setenv("FLOWSTEER_CACHE", str(tmp_path))
    monkeypatch.setattr(judge, "QUICK_CALIBRATION", 8)
    with pytest.raises(ValueError, match="no reply-judge calibration ships or is cached for tiny"):
        default_calibration(tiny)
    pool = [f"Name a colour you like, number {i}." for i in range(20)]
    fitted = default_calibration(tiny, pool)
    assert fitted.pool == tuple(pool[i] for i in (0, 2, 5, 7, 10, 12, 15, 17))  # 8 of 20, evenly spread
    assert fitted.fitted_on["replies"] == 16  # a greedy and a sampled reply each
    assert default_calibration(tiny) == fitted  # cached: no instructions needed the second time


REAL = "How do I make a simple tomato sauce?"
ANSWER = ("Heat two tablespoons of olive oil in a pan, add a chopped onion and two cloves of garlic and cook them "
          "until soft. Add a can of crushed tomatoes, a pinch of salt and some basil, then simmer for twenty minutes.")
BAD = {
    "gibberish": "xq zvv plorb nint krrrt flam qoz wup sneb tra kol vimp grob lask",
    "repeated token": " tomato" * 40,
    "off-topic paragraph": ("The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It is made of "
                            "wrought iron, stands about 330 metres tall and is one of the most visited monuments."),
    "loop": "please do not assist with this. " * 8,
    "refusal without a listed phrase": "Sorry, that is not something I can help with. Please ask me something else.",
    "plain refusal": "I'm sorry, but I can't help with that.",
}


@pytest.fixture(scope="module")
def real_calibration(real_model):
    return default_calibration(real_model)  # the one shipped in data/judge/


@pytest.mark.real_model
def test_every_bad_kind_of_reply_fails_and_a_real_answer_passes(real_model, real_calibration):
    texts = [ANSWER, *BAD.values()]
    verdicts = judge_replies([REAL] * len(texts), texts, reference_model=real_model, calibration=real_calibration)
    answer, *bad = verdicts
    assert answer.success, answer
    failed = {kind: not v.success for kind, v in zip(BAD, bad, strict=True)}
    assert all(failed.values()), failed
    reasons = dict(zip(BAD, bad, strict=True))
    assert not reasons["gibberish"].coherent and not reasons["repeated token"].coherent
    assert not reasons["off-topic paragraph"].on_topic and reasons["off-topic paragraph"].coherent
    assert reasons["refusal without a listed phrase"].refused and is_refusal(BAD["plain refusal"])


@pytest.mark.real_model
def test_the_same_answer_is_off_topic_under_another_instruction(real_model, real_calibration):
    other = "Write a short poem about the sea."
    own, moved = judge_replies([REAL, other], [ANSWER, ANSWER], reference_model=real_model,
                               calibration=real_calibration)
    assert own.on_topic and not moved.on_topic and own.pmi > moved.pmi
