"""TRL reward functions: the async judge reward and the format reward, called the way GRPOTrainer calls them."""

from __future__ import annotations

import asyncio

import pytest
from fake_openai_server import FakeOpenAIServer, Fault
from trl.trainer.utils import get_callable_name, is_async_callable

from medgspo.judge import JudgeConfig
from medgspo.judge.api.client import OpenAIJudge
from medgspo.rewards.format import format_reward
from medgspo.rewards.judge import JudgeReward, judge_reward

QUESTION = "患者男，25岁，转移性右下腹痛。最可能的诊断？"
REFERENCE = "最可能的诊断是急性阑尾炎。"


def trl_call(reward, completions: list, **overrides):
    """Call a reward exactly as GRPOTrainer._calculate_rewards does (dataset columns as keyword lists)."""
    metrics: dict[str, list[float]] = {}
    extra: dict[str, list] = {}
    kwargs = {
        "prompts": [[{"role": "user", "content": QUESTION}]] * len(completions),
        "completions": completions,
        "completion_ids": [[1, 2, 3]] * len(completions),
        "question": [QUESTION] * len(completions),
        "reference": [REFERENCE] * len(completions),
        "trainer_state": None,
        "log_extra": lambda column, values: extra.setdefault(column, []).extend(values),
        "log_metric": lambda name, value: metrics.setdefault(name, []).append(value),
    } | overrides
    result = reward(**kwargs)
    if asyncio.iscoroutine(result):
        result = asyncio.run(_and_close(result, reward))
    return result, metrics, extra


async def _and_close(coro, reward):
    try:
        return await coro
    finally:
        await reward.judge._close_http()  # TRL keeps one loop alive; each asyncio.run here is a new one


def assistant(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def test_format_reward() -> None:
    completions = [
        "推理。\n</think>\n\n诊断为急性阑尾炎。",
        assistant("<think>\n推理\n</think>\n\n答案"),
        "只有思考，没有结束",
        "推理</think>",  # empty answer
        "a</think>b</think>c",  # two closing tags
    ]
    assert format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_format_reward_can_ask_for_thinking() -> None:
    from medgspo.rewards import REWARDS, RewardArguments
    from medgspo.rewards.format import format_reward_with_thinking

    completions = [
        "先看体征再定诊断。\n</think>\n\n诊断为急性阑尾炎。",
        "<think>\n\n</think>\n\n诊断为急性阑尾炎。",
        "短\n</think>\n\n答案",
    ]
    assert format_reward_with_thinking(0) is format_reward
    assert format_reward_with_thinking(4)(completions) == [1.0, 0.0, 0.0]
    assert format_reward_with_thinking(1)(completions) == [1.0, 0.0, 1.0]
    reward = REWARDS["format"](RewardArguments(min_think_chars=4), JudgeConfig(judge_backend="reference"))
    assert get_callable_name(reward) == "format_reward" and reward(completions) == [1.0, 0.0, 0.0]


def test_trl_sees_an_async_named_reward() -> None:
    reward = judge_reward(JudgeConfig(judge_backend="reference"))
    assert is_async_callable(reward) and get_callable_name(reward) == "judge_reward"
    assert (
        get_callable_name(judge_reward(JudgeConfig(judge_backend="reference"), name="medical_judge"))
        == "medical_judge"
    )
    assert get_callable_name(format_reward) == "format_reward"


def test_judge_reward_with_the_reference_backend() -> None:
    reward = judge_reward(JudgeConfig(judge_backend="reference"))
    completions = [
        assistant("想想\n</think>\n\n最可能的诊断是急性阑尾炎。"),
        assistant("没有结束思考"),
        assistant("想想\n</think>\n\n今天天气很好，我们去公园散步吧。"),
        assistant("想想\n</think>\n\n最可能的诊断是急性胆囊炎。"),
    ]
    scores, metrics, extra = trl_call(reward, completions)
    assert scores == [2.0, -1.0, 0.0, None]
    assert metrics["judge/tier_A"] == [1.0] and metrics["judge/tier_E"] == [1.0] and metrics["judge/tier_B"] == [0.0]
    assert metrics["judge/failure_rate"] == [0.0] and metrics["judge/abstained"] == [1.0]
    assert extra["judge_label"] == ["A", "E", "C", None]
    assert reward.stats.judgments == 4


def test_judge_reward_scores_a_malformed_layout_by_rule_as_evaluation_does() -> None:
    """Closing the thinking twice must not turn a -1.0 into a judged answer (a GSPO policy found that)."""
    reward = judge_reward(JudgeConfig(judge_backend="reference"))
    completions = [
        assistant("想想\n</think>\n\n</think>\n\n最可能的诊断是急性阑尾炎。"),  # several </think>
        assistant("想想\n</think>\n\n<think>最可能的诊断是急性阑尾炎。"),  # a <think> inside the answer
        assistant("<think>想想\n</think>\n\n最可能的诊断是急性阑尾炎。"),  # one leading <think> is fine
    ]
    scores, _, extra = trl_call(reward, completions)
    assert scores == [-1.0, -1.0, 2.0]
    assert extra["judge_label"] == ["E", "E", "A"]


def test_judge_reward_gathers_the_batch_in_one_call() -> None:
    with FakeOpenAIServer(latency_s=0.3) as server:
        judge = OpenAIJudge(
            JudgeConfig(judge_backend="openai", judge_base_url=server.base_url, judge_concurrency=16), api_key="k"
        )
        reward = JudgeReward(judge)
        completions = [f"想\n</think>\n回答{i}" for i in range(16)]
        scores, metrics, _ = trl_call(reward, completions)
    assert scores == [0.5] * 16
    assert server.max_in_flight == 16  # all 16 calls were in flight together inside the one reward call
    assert metrics["judge/calls"] == [16.0] and metrics["judge/latency_p50_s"][0] >= 0.3


def test_failed_judgments_are_none_counted_and_logged(caplog) -> None:
    with FakeOpenAIServer() as server:
        server.inject(Fault.http(500), answer="回答1")
        judge = OpenAIJudge(
            JudgeConfig(judge_backend="openai", judge_base_url=server.base_url, judge_max_retries=0), api_key="k"
        )
        scores, metrics, extra = trl_call(JudgeReward(judge), ["想\n</think>\n回答0", "想\n</think>\n回答1"])
    assert scores == [0.5, None]  # never 0.0
    assert metrics["judge/failures"] == [1.0] and metrics["judge/failure_rate"] == [0.5]
    assert extra["judge_error"][0] is None and extra["judge_error"][1].startswith("HTTP 500")
    assert "Judge failed on 1 of 2" in caplog.text


def test_run_level_accounting_accumulates() -> None:
    reward = judge_reward(JudgeConfig(judge_backend="reference"))
    for _ in range(3):
        trl_call(reward, ["想\n</think>\n最可能的诊断是急性阑尾炎。"])
    assert reward.stats.judgments == 3 and reward.stats.tiers == {"A": 3}


def test_missing_columns_are_named() -> None:
    reward = judge_reward(JudgeConfig(judge_backend="reference"))
    with pytest.raises(ValueError, match="'question' and 'reference'"):
        trl_call(reward, ["x</think>y"], question=None)


# ---- key terms and abstentions --------------------------------------------------------------------------------------
KEY_COLUMNS = {"key_terms": [["阑尾炎"]] * 3, "ruled_out": [["胆囊炎"]] * 3}
KEY_COMPLETIONS = [
    assistant("想想\n</think>\n\n考虑阑尾炎，建议手术。"),  # the key term, reworded: +2.0
    assistant("想想\n</think>\n\n考虑急性胆囊炎。"),  # a ruled-out alternative as the conclusion: -0.5
    assistant("想想\n</think>\n\n建议完善腹部检查后再决定。"),  # neither: the judge abstains
]


def test_judge_reward_reads_the_key_term_columns() -> None:
    scores, metrics, extra = trl_call(
        judge_reward(JudgeConfig(judge_backend="reference")), KEY_COMPLETIONS, **KEY_COLUMNS
    )
    assert scores == [2.0, -0.5, None]  # a plain judge reward reports the abstention as it is
    assert extra["judge_label"] == ["A", "D", None] and metrics["judge/abstained"] == [1.0]
    # without the columns (a Hub dataset) the same answers are judged as before: no lexical evidence, abstain
    assert trl_call(judge_reward(JudgeConfig(judge_backend="reference")), KEY_COMPLETIONS)[0] == [None, None, None]


def test_in_training_an_abstention_scores_the_judge_floor_not_the_group_mean() -> None:
    """GSPO's reward from the registry: an abstention earns -1.0 from the judge (only format and guards lift it),
    so it is no hiding place; with `abstain_score: null` it stays None (TRL: the group's mean)."""
    from medgspo.rewards import ABSTAIN_SCORE, RewardArguments, get_reward_funcs

    assert RewardArguments().abstain_score == ABSTAIN_SCORE == -1.0
    (judge,) = get_reward_funcs(RewardArguments(reward_funcs=["judge"]), JudgeConfig(judge_backend="reference"))
    scores, metrics, _ = trl_call(judge, KEY_COMPLETIONS, **KEY_COLUMNS)
    assert scores == [2.0, -0.5, -1.0]
    assert metrics["judge/abstained"] == [1.0]  # still counted as an abstention, not as an E verdict
    (kept,) = get_reward_funcs(RewardArguments(abstain_score=None), JudgeConfig(judge_backend="reference"))
    assert trl_call(kept, KEY_COMPLETIONS, **KEY_COLUMNS)[0] == [2.0, -0.5, None]


def test_a_failed_judgment_is_not_an_abstention() -> None:
    with FakeOpenAIServer() as server:
        server.inject(Fault.http(500), answer="回答1")
        judge = OpenAIJudge(
            JudgeConfig(
                judge_backend="openai", judge_base_url=server.base_url, judge_max_retries=0, judge_max_reasks=0
            ),
            api_key="k",
        )
        scores, _, _ = trl_call(JudgeReward(judge, abstain_score=-1.0), ["想\n</think>\n回答0", "想\n</think>\n回答1"])
    assert scores == [0.5, None]  # a failure stays None whatever the abstention score


def test_a_new_parameterised_reward_is_its_function_and_one_registry_line() -> None:
    """As a newcomer adds one: a function with a dataclass of its one flag, and a line in the registry. The flag
    then exists (``reward_arguments`` makes the parsed class from the registry) and the reward is built from it."""
    from dataclasses import dataclass, field

    from medgspo.data.chat_format import split_completion
    from medgspo.rewards import REWARDS, Reward, get_reward_funcs, reward_arguments
    from medgspo.utils.cli import parse_args

    @dataclass
    class BrevityArguments:
        brevity_chars: int = field(default=120, metadata={"help": "Answers longer than this earn -1."})

    def brevity_reward(limit: int):
        def brevity(completions, **kwargs):
            return [-1.0 if len(split_completion(c).answer) > limit else 0.0 for c in completions]

        return brevity

    registry = {**REWARDS, "brevity": Reward(BrevityArguments, lambda args, judge: brevity_reward(args.brevity_chars))}
    (args,) = parse_args(
        (reward_arguments(registry),), ["--reward_funcs", "format", "brevity", "--brevity_chars", "4"]
    )
    _, brevity = get_reward_funcs(args, JudgeConfig(judge_backend="reference"), registry)
    assert brevity(["想\n</think>\n\n肺炎。", "想\n</think>\n\n社区获得性肺炎可能性大。"]) == [0.0, -1.0]
    assert args.min_think_chars == 0 and args.abstain_score == -1.0  # the other rewards' flags are all there
