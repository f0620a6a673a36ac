"""The key-term rule of the offline reference judge: +2.0 / -0.5 / abstain from a record's key terms and
ruled-out alternatives, polarity included; records without them are judged as before."""

import pytest

from medgspo.judge import JudgeConfig, make_judge
from medgspo.judge.reference.heuristic import reference_verdict
from medgspo.judge.reference.key_terms import key_term_verdict, polarities

QUESTION = "患者女，42岁，心尖区舒张期隆隆样杂音，房颤。最可能的诊断是什么？"
REFERENCE = "最可能的诊断是风湿性心脏病二尖瓣狭窄合并心房颤动。应行超声心动图评估。"
KEY = ["二尖瓣狭窄"]
RULED_OUT = ["主动脉瓣关闭不全", "左房黏液瘤"]
AVOID_REFERENCE = "应避免使用硝酸酯类（如硝酸甘油）和利尿剂等降低前负荷的药物。"


@pytest.mark.parametrize(
    "answer, label",
    [
        ("二尖瓣狭窄。", "A"),  # the key term alone is the conclusion
        ("考虑风湿性二尖瓣狭窄，需超声确认。", "A"),  # a paraphrase around the key term
        ("二尖瓣狭窄，不考虑主动脉瓣关闭不全。", "A"),  # a ruled-out alternative, negated
        ("二尖瓣狭窄，需与左房黏液瘤鉴别。", "A"),  # ... or named as a differential
        ("主动脉瓣关闭不全。", "D"),  # concludes what the reasoning rejected
        ("二尖瓣狭窄或左房黏液瘤。", "D"),  # hedging: naming every candidate earns no +2.0
        ("不考虑二尖瓣狭窄，而是左房黏液瘤。", "D"),  # the contrast word starts a new clause
        ("心肌炎。", None),  # neither: abstain
        ("不是二尖瓣狭窄。", None),  # the key term with the opposite polarity: abstain
    ],
)
def test_key_term_verdicts(answer, label):
    assert key_term_verdict(answer, REFERENCE, KEY, RULED_OUT).label == label


def test_all_key_terms_are_needed_and_polarity_follows_the_reference():
    reference = "应在利尿剂基础上加用β受体阻滞剂和SGLT2抑制剂。"
    terms = ["SGLT2", "β受体阻滞"]
    assert key_term_verdict("加用sglt2抑制剂和β受体阻滞剂", reference, terms).label == "A"  # NFKC + case
    assert key_term_verdict("加用SGLT2抑制剂", reference, terms).label == "B"  # one of two: partly right
    # the reference says to *avoid* nitrates: the answer must avoid them too
    assert key_term_verdict("避免硝酸甘油。", AVOID_REFERENCE, ["硝酸"]).label == "A"
    assert key_term_verdict("首选硝酸甘油。", AVOID_REFERENCE, ["硝酸"]).label is None


def test_negation_words_inside_medical_terms_do_not_negate():
    # 非甾体, 不稳定型, 不同 contain 非/不 but negate nothing
    assert polarities("首选阿司匹林或其他非甾体抗炎药联合秋水仙碱", "秋水仙碱") == [True]
    assert polarities("从不同部位采集血培养", "血培养") == [True]
    assert polarities("不稳定型心绞痛", "心绞痛") == [True]


def test_latin_terms_match_whole_words_only():
    assert polarities("行增强ct", "ct") == [True]
    assert polarities("行cta", "ct") == [] and polarities("pct升高", "ct") == []
    assert polarities("hla-b*5801阳性", "hla-b*58") == [True]  # digits may continue


def test_reference_judge_uses_the_terms_after_its_incoherence_rules():
    kwargs = {"key_terms": KEY, "ruled_out": RULED_OUT}
    assert reference_verdict(QUESTION, REFERENCE, "二尖瓣狭窄二尖瓣狭窄" * 4, **kwargs).label == "E"  # repetition
    assert reference_verdict(QUESTION, REFERENCE, "，二尖瓣狭窄", **kwargs).label == "E"  # a fragment
    assert reference_verdict(QUESTION, REFERENCE, "考虑二尖瓣狭窄", **kwargs).label == "A"
    assert reference_verdict(QUESTION, REFERENCE, "左房黏液瘤可能大", **kwargs).label == "D"
    # without the fields, the same answers are judged as before: no lexical evidence, abstain
    assert reference_verdict(QUESTION, REFERENCE, "考虑二尖瓣狭窄").label is None
    assert reference_verdict(QUESTION, REFERENCE, "左房黏液瘤可能大").label is None


def test_the_judge_reads_the_fields_from_each_item():
    judge = make_judge(JudgeConfig(judge_backend="reference"))
    rows = [
        {"question": QUESTION, "reference": REFERENCE, "answer": "考虑二尖瓣狭窄", "key_terms": KEY},
        {
            "question": QUESTION,
            "reference": REFERENCE,
            "answer": "左房黏液瘤",
            "key_terms": KEY,
            "ruled_out": RULED_OUT,
        },
        {"question": QUESTION, "reference": REFERENCE, "answer": "考虑二尖瓣狭窄"},  # no fields: as today
    ]
    judgments = judge.judge_batch_sync(rows)
    assert [j.score for j in judgments] == [2.0, -0.5, None]
    assert judgments[2].error.startswith("undecided")
    with pytest.raises(ValueError, match="key_terms"):
        judge.judge_batch_sync([{**rows[0], "key_terms": "二尖瓣狭窄"}])


def test_every_bundled_reference_scores_a_and_its_ruled_out_alternatives_d(bundled_records):
    """The bundled answers themselves earn +2.0 under the rule, and each ruled-out alternative stated as the
    answer earns -0.5."""
    for record in bundled_records:
        terms = record["key_terms"], record["ruled_out"]
        assert key_term_verdict(record["Response"], record["Response"], *terms).label == "A", record["Question"]
        for wrong in record["ruled_out"]:
            verdict = key_term_verdict(f"{wrong}。", record["Response"], *terms)
            assert verdict.label == "D", (record["Question"], wrong)
