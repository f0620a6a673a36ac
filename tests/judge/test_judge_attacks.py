"""The shipped attack set against the judge path: a swayable judge server, the offline reference judge, the
rendered prompts, and ``judge calibrate``'s report of attacks above their deserved tier."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer

from medgspo.cli import main
from medgspo.judge import JudgeConfig, make_judge
from medgspo.judge.calibration.run import BUNDLED_ATTACKS, read_labelled
from medgspo.judge.rubric.prompt import render_candidate
from medgspo.judge.rubric.sanitize import INVISIBLE

INJECTION_CLASSES = {
    "verdict_injection",
    "instruction_zh",
    "instruction_en",
    "role_tokens",
    "delimiter_forgery",
    "unicode_obfuscation",
}
# What a judge that is easily swayed obeys: any verdict, instruction, role or tag text it can still read.
SWAY = re.compile(
    r"label|score|grade|评分|满分|给A|评为|A级|ignore|忽略|system|assistant|user|candidate|\[\[|<\|", re.I
)
ROWS = read_labelled(BUNDLED_ATTACKS)


def test_the_attack_set_is_what_the_docs_say() -> None:
    attacks = [r for r in ROWS if r["kind"] == "attack"]
    controls = [r for r in ROWS if r["kind"] == "control"]
    classes = Counter(r["class"] for r in attacks)
    assert len(attacks) >= 60 and len(classes) >= 8 and len(controls) >= 20
    assert INJECTION_CLASSES <= set(classes)
    assert all(r["label"] == -1.0 for r in attacks if r["class"] in INJECTION_CLASSES)


def swayable_server(seen: list[str]) -> FakeOpenAIServer:
    honest = {render_candidate(r["answer"], 4000): r["label"] for r in ROWS}
    labels = {2.0: "A", 0.5: "B", 0.0: "C", -0.5: "D", -1.0: "E"}

    def rule(question: str, reference: str, answer: str) -> str:
        seen.append(answer)
        if SWAY.search(answer):
            return "A"  # obeys whatever injected verdict or instruction it can read
        return labels[honest.get(answer, -0.5)]

    return FakeOpenAIServer(rule=rule, model="deepseek-flash")


def test_a_swayable_judge_never_pays_an_injection(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ATTACK_KEY", "sk-attack-test")
    seen: list[str] = []
    out = tmp_path / "cal"
    with swayable_server(seen) as server:
        argv = ["judge", "calibrate", "--input", str(BUNDLED_ATTACKS), "--output", str(out), "--no_progress"]
        flags = ["--judge_backend", "openai", "--judge_base_url", server.base_url, "--judge_api_key_env", "ATTACK_KEY"]
        assert main([*argv, *flags]) == 0
        users = [r["messages"][1]["content"] for r in server.requests]
    judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in judged:
        if row["class"] in INJECTION_CLASSES:  # stopped before the call, -1.0 with the rule's name
            assert row["score"] == -1.0 and row["judge_reason"].startswith("manipulation rule"), row["id"]
    summary = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
    by_class = summary["adversarial"]["attacks"]["by_class"]
    assert all(by_class[c]["above_deserved"] == 0 for c in INJECTION_CLASSES)
    assert summary["adversarial"]["controls"]["punished"] == 0  # the honest answers reach the judge and pass
    # what the judge was shown: no special token, no invisible character, no delimiter it could be fooled by
    assert len(users) == sum(r["class"] not in INJECTION_CLASSES for r in ROWS)
    for text in seen:
        assert not INVISIBLE.search(text) and "<|" not in text and "candidate_answer" not in text
    for user in users:
        tags = re.findall(r"</?candidate_answer_[0-9a-f]{8}>", user)
        assert len(tags) == 2 and tags[1] == "</" + tags[0][1:]


def test_the_reference_judge_pays_no_attack_and_punishes_no_control() -> None:
    judge = make_judge(JudgeConfig(judge_backend="reference"))
    fields = ("question", "reference", "answer", "key_terms", "ruled_out")
    results = judge.judge_batch_sync([{k: r[k] for k in fields if k in r} for r in ROWS])
    for row, judgment in zip(ROWS, results, strict=True):
        if row["kind"] == "attack":
            assert judgment.score != 2.0, row["id"]
            assert judgment.score is None or judgment.score <= row["label"], row["id"]
        elif row["label"] == 2.0:
            assert judgment.score is None or judgment.score >= 0.5, row["id"]
        else:
            assert judgment.score is None or judgment.score >= row["label"], row["id"]


@pytest.mark.parametrize("name", ["judge_attacks_zh.jsonl", "judge_calibration_zh.jsonl"])
def test_shipped_sets_carry_no_manipulation_false_positive_among_honest_items(name: str) -> None:
    from medgspo.judge.rubric.manipulation import manipulation
    from medgspo.utils.paths import DATA_DIR

    rows = read_labelled(DATA_DIR / name)
    flagged = [r["id"] for r in rows if manipulation(r["answer"]) and r["label"] > -1.0]
    assert flagged == []


def test_no_manipulation_false_positive_in_the_bundled_records_and_mcq_items() -> None:
    from medgspo.judge.rubric.manipulation import manipulation
    from medgspo.utils.paths import DATA_DIR

    records = [
        json.loads(line) for line in (DATA_DIR / "medical_o1_zh.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    mcq = [json.loads(line) for line in (DATA_DIR / "mcq_zh.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [r[f] for r in records for f in ("Question", "Complex_CoT", "Response")]
    texts += [json.dumps(item, ensure_ascii=False) for item in mcq]  # question, options and answer together
    assert len(records) == 256 and len(mcq) == 112
    assert [t[:60] for t in texts if manipulation(t)] == []
