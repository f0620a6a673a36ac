"""Medical-domain guards: literal inputs, hand-worked values, and their TRL reward wrappers."""

import pytest

from medgspo.judge import JudgeConfig
from medgspo.rewards import REWARDS, RewardArguments
from medgspo.rewards.guards import language_penalty, length_penalty, repetition_penalty


@pytest.mark.parametrize(
    "text, expected",
    [
        ("急性阑尾炎，建议尽早手术。", 0.0),
        ("腹痛腹痛腹痛腹痛", -0.6),  # 5 character 4-grams, 2 distinct -> 3 repeats / 5
        ("肺炎，肺炎。肺炎", -0.3333),  # punctuation removed: 3 4-grams, 2 distinct -> 1 repeat / 3
        ("短", 0.0),  # fewer than two 4-grams
    ],
)
def test_repetition_on_chinese_characters(text, expected):
    assert repetition_penalty(text) == expected


def test_length_guard_ramps_after_the_limit():
    assert length_penalty("字" * 300, max_chars=300) == 0.0
    assert length_penalty("字" * 450, max_chars=300) == -0.5  # 150 over a 300-character ramp
    assert length_penalty("字" * 2000, max_chars=300) == -1.0


def test_language_guard_tolerates_abbreviations_but_not_english_answers():
    assert language_penalty("首选静脉注射呋塞米并监测CT与ECG。") == 0.0
    assert language_penalty("Give furosemide IV now.") == -1.0
    # 2 Latin words among 4 CJK characters: share 1/3, just over the 0.3 tolerance -> -(0.0333 / 0.7)
    assert language_penalty("首选 ACEI 或 ARB 类") == pytest.approx(-round((1 / 3 - 0.3) / 0.7, 4))


def test_reward_wrappers_follow_trl_signature():
    args, judge = RewardArguments(max_answer_chars=4), JudgeConfig(judge_backend="reference")
    rewards = {name: REWARDS[name](args, judge) for name in ("repetition", "length", "language")}
    completions = [
        "想</think>\n\n肺炎。",  # fine
        [{"role": "assistant", "content": "想</think>\n\n社区获得性肺炎。"}],  # 8 chars: 4 over a 4-char ramp
        "腹痛腹痛腹痛腹痛",  # no answer; a reasoning loop
    ]
    assert rewards["length"](completions) == [0.0, -1.0, 0.0]
    assert rewards["repetition"](completions) == [0.0, 0.0, -0.6]
    assert rewards["language"](completions) == [0.0, 0.0, 0.0]
    assert [f.__name__ for f in rewards.values()] == ["repetition_guard", "length_guard", "language_guard"]
