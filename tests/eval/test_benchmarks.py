"""Benchmarks as they are published: MedQA-MCMLE (5 and 4 options) and CMMLU loaders, layout detection, several
benchmarks in one ``medgspo eval --task mcq`` run (one table), ``--subjects``, ``--num_samples``, the prompt.

Files are written in tmp folders in the published layouts, with the real rows quoted in research notes (MedQA README,
lm-eval's MedQA docstring, CMMLU's data/test and data/dev, CMB's README); rows marked "made up" only fill the shape.
"""

from __future__ import annotations

import json

import pytest

from medgspo.cli import main
from medgspo.data.chat_format import ChatFormat, split_completion
from medgspo.data.records import DataError
from medgspo.errors import ConfigError
from medgspo.eval.benchmarks import Benchmark, load_benchmarks
from medgspo.eval.layouts import MCQItem, detect_layout, load_mcq
from medgspo.eval.layouts.cmmlu import MEDICAL_SUBJECTS
from medgspo.eval.mcq import MCQTask, build_prompt
from medgspo.eval.runner import GenerationSettings
from medgspo.modeling.generation import Generation

MEDQA_5 = {
    "question": "卧位腰椎穿刺，脑脊液压力正常值是（　　）。",
    "options": {
        "A": "190～220mmH2O（1.86～2.16kPa）",
        "B": "80～180mmH2O（0.78～1.76kPa）",
        "C": "50～70mmH2O（0.49～0.69kPa）",
        "D": "230～250mmH2O（2.25～2.45kPa）",
        "E": "260～280mmH2O（2.55～2.74kPa）",
    },
    "answer": "80～180mmH2O（0.78～1.76kPa）",
    "meta_info": "第三部分　精神神经系统疾病",
    "answer_idx": "B",
}
MEDQA_4 = {
    "question": "经调查证实出现医院感染流行时，医院应报告当地卫生行政部门的时间是（　　）。",
    "options": {"A": "2小时", "B": "4小时内", "C": "12小时内", "D": "24小时内"},
    "answer": "24小时内",
    "meta_info": "卫生法规",
    "answer_idx": "D",
}
CMMLU_HEADER = ",Question,A,B,C,D,Answer"
CMMLU_ROWS = {  # the first two are real rows (data/test/clinical_knowledge.csv, data/dev/anatomy.csv)
    "clinical_knowledge": "1,对评估肝硬化患者预后意义不大的是,腹水,清蛋白,血电解质,凝血酶原时间,C",
    "anatomy": "0,壁胸膜的分部不包括,肋胸膜,肺胸膜,膈胸膜,胸膜顶,B",
}
CMB_ITEM = {  # the item of CMB's README
    "exam_type": "医师考试",
    "exam_class": "执业医师",
    "exam_subject": "口腔执业医师",
    "question": "患者,男性,11岁。近2个月来时有低热(37~38℃),全身无明显症状。查体无明显阳性体征。X线检查发现右肺中部有一"
    "直径约0.8cm类圆形病灶,边缘稍模糊,肺门淋巴结肿大。此男孩可能患",
    "answer": "D",
    "question_type": "单项选择题",
    "option": {"A": "小叶型肺炎", "B": "浸润性肺结核", "C": "继发性肺结核", "D": "原发性肺结核", "E": "粟粒型肺结核"},
}


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def medqa(tmp_path):
    """MedQA's two Mainland test files: 5 options (A-E) and 4 options (A-D, with one row whose key disagrees)."""
    five = _jsonl(
        tmp_path / "MedQA" / "Mainland" / "test.jsonl",
        [
            MEDQA_5,
            {**MEDQA_5, "question": "同一题，另一行（made up）", "answer": MEDQA_5["options"]["C"], "answer_idx": "C"},
        ],
    )
    bad_key = {**MEDQA_4, "answer": "2小时"}  # options[D] is 24小时内: graded by D, reported
    four = _jsonl(tmp_path / "MedQA" / "Mainland" / "4_options" / "test.jsonl", [MEDQA_4, bad_key])
    return five, four


@pytest.fixture
def cmmlu(tmp_path):
    """CMMLU's data/test with the 8 medical subjects and one other subject; a quoted cell holds a comma."""
    folder = tmp_path / "CMMLU" / "data" / "test"
    folder.mkdir(parents=True)
    for subject in (*MEDICAL_SUBJECTS, "marketing"):
        rows = [
            CMMLU_ROWS.get(subject, f'0,"{subject}的题，含逗号（made up）",甲,乙,丙,丁,A'),
            f"1,{subject}第二题,甲,乙,丙,丁,D",
        ]
        (folder / f"{subject}.csv").write_text("\n".join([CMMLU_HEADER, *rows]) + "\n", encoding="utf-8")
    return folder


# ---- MedQA --------------------------------------------------------------------------------------------------------
def test_medqa_five_options_graded_by_answer_idx(medqa):
    five, _ = medqa
    assert detect_layout(five) == "medqa"
    loaded = load_mcq(five)
    assert loaded.layout == "medqa" and not loaded.mismatches
    first, second = loaded.items
    assert (first.answer, first.letters, first.subject, first.line) == ("B", "ABCDE", "第三部分　精神神经系统疾病", 1)
    assert second.answer == "C"
    # what the issue saw: read as our layout, the answer text is not a letter
    with pytest.raises(DataError, match=r"test\.jsonl:1: answer: expected option letter\(s\), got '80～180"):
        load_mcq(five, layout="medgspo")


def test_medqa_four_options_reports_key_mismatches(medqa):
    _, four = medqa
    loaded = load_mcq(four)
    assert [i.answer for i in loaded.items] == ["D", "D"] and loaded.items[0].letters == "ABCD"
    (mismatch,) = loaded.mismatches
    assert (
        str(mismatch) == f"{four}:2: answer: options['D'] is '24小时内' but answer is '2小时' (graded by answer_idx D)"
    )


def test_medqa_bad_rows_name_file_line_and_field(tmp_path):
    rows = [
        MEDQA_4,
        {k: v for k, v in MEDQA_4.items() if k != "answer_idx"},
        {**MEDQA_4, "answer_idx": "E"},
        {**MEDQA_4, "options": ["2小时", "4小时内"]},
        {**MEDQA_4, "question": ""},
    ]
    path = _jsonl(tmp_path / "test.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_mcq(path)
    text = str(info.value)
    assert f"{path}:2: answer_idx: expected option letter(s), got None" in text
    assert f"{path}:3: answer_idx: 'E' is not among the options ABCD" in text
    assert f"{path}:4: options: expected an object of letter -> text, got list" in text
    assert f"{path}:5: question: missing or empty" in text


# ---- CMMLU --------------------------------------------------------------------------------------------------------
def test_cmmlu_file(cmmlu):
    path = cmmlu / "clinical_knowledge.csv"
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",Question,A,B,C,D,Answer"
    assert detect_layout(path) == "cmmlu"
    loaded = load_mcq(path)
    first, second = loaded.items
    assert first.question == "对评估肝硬化患者预后意义不大的是"
    assert first.options == {"A": "腹水", "B": "清蛋白", "C": "血电解质", "D": "凝血酶原时间"}
    assert (first.answer, first.subject, first.line, second.line) == ("C", "clinical_knowledge", 2, 3)
    assert load_mcq(cmmlu / "genetics.csv").items[0].question == "genetics的题，含逗号（made up）"


def test_cmmlu_folder_and_subjects(cmmlu):
    assert detect_layout(cmmlu) == "cmmlu"
    everything = load_mcq(cmmlu)
    assert len(everything.items) == 18 and {i.subject for i in everything.items} >= {"marketing", "anatomy"}
    medical = load_mcq(cmmlu, subjects=["medical"])
    assert sorted({i.subject for i in medical.items}) == sorted(MEDICAL_SUBJECTS) and len(medical.items) == 16
    two = load_mcq(cmmlu, subjects=["anatomy,virology.csv"])
    assert [i.subject for i in two.items] == ["anatomy", "anatomy", "virology", "virology"]
    with pytest.raises(ConfigError, match=r"--subjects: no subject file surgery\.csv in .*; available: anatomy"):
        load_mcq(cmmlu, subjects=["anatomy", "surgery"])
    with pytest.raises(DataError, match=r"no \.csv subject files in this folder \(point --data at data/test\)"):
        load_mcq(cmmlu.parent)


def test_cmmlu_bad_files_report_every_problem(tmp_path):
    folder = tmp_path / "test"
    folder.mkdir()
    (folder / "anatomy.csv").write_text(f"{CMMLU_HEADER}\n0,问？,甲,乙,丙,丁,E\n1,,甲,乙,丙,丁,A\n", encoding="utf-8")
    (folder / "virology.csv").write_text(",Question,A,B,C,Answer\n0,问？,甲,乙,丙,A\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_mcq(folder)
    text = str(info.value)
    assert f"{folder / 'anatomy.csv'}:2: Answer: 'E' is not among the options ABCD" in text
    assert f"{folder / 'anatomy.csv'}:3: Question: missing or empty" in text
    assert f"{folder / 'virology.csv'}:1: <header>: missing column(s) D; the header is ,Question,A,B,C,Answer" in text


def test_detection_of_every_layout(tmp_path, medqa, cmmlu):
    cmexam = tmp_path / "cmexam.csv"
    cmexam.write_text('Question,Options,Answer\n有机磷中毒首选的解毒药是,"A 阿托品\nB 新斯的明",A\n', encoding="utf-8")
    cmb = tmp_path / "cmb.json"
    cmb.write_text(json.dumps([CMB_ITEM], ensure_ascii=False), encoding="utf-8")
    ours = _jsonl(tmp_path / "ours.jsonl", [{"question": "问？", "options": {"A": "甲", "B": "乙"}, "answer": "A"}])
    found = [detect_layout(p) for p in (ours, cmexam, cmb, medqa[0], medqa[1], cmmlu / "anatomy.csv", cmmlu)]
    assert found == ["medgspo", "cmexam", "cmb", "medqa", "medqa", "cmmlu", "cmmlu"]
    assert load_mcq(cmb).items[0].answer == "D"
    with pytest.raises(DataError, match="a folder is read as CMMLU subject files, not cmexam"):
        load_mcq(cmmlu, layout="cmexam")


# ---- several benchmarks -------------------------------------------------------------------------------------------
def test_load_benchmarks_names_limits_and_problems(tmp_path, medqa, cmmlu):
    five, four = medqa
    benches = load_benchmarks([str(five), str(four), str(cmmlu)], subjects=["medical"], limit=1)
    assert [b.name for b in benches] == ["MedQA-MCMLE (5 options)", "MedQA-MCMLE (4 options)", "CMMLU"]
    assert [len(b.items) for b in benches] == [1, 1, 8]  # --limit is per subject file in a CMMLU folder
    assert benches[1].key_mismatches == []  # the row that disagrees is not among the graded ones
    assert len(load_benchmarks([str(four)])[0].key_mismatches) == 1
    twice = load_benchmarks([str(five), str(five)])
    assert [b.name for b in twice] == [f"MedQA-MCMLE (5 options) ({five})"] * 2
    broken = _jsonl(tmp_path / "broken.jsonl", [{**MEDQA_4, "answer_idx": "Z"}])
    with pytest.raises(DataError) as info:
        load_benchmarks([str(broken), str(tmp_path / "missing.jsonl")])
    assert len(info.value.problems) == 2  # both files' problems at once
    with pytest.raises(ConfigError, match="no --data is CMMLU"):
        load_benchmarks([str(five)], subjects=["anatomy"])


def _gen(text):
    return Generation("q", text, split_completion(text), 3)


def test_task_asks_every_question_k_times_and_scores_per_benchmark():
    a = Benchmark("A", "medgspo", "a.jsonl", [MCQItem("一？", {"A": "甲", "B": "乙"}, "A", "x")])
    b = Benchmark(
        "B", "cmmlu", "b", [MCQItem("二？", {"A": "甲", "B": "乙"}, "B"), MCQItem("三？", {"A": "甲", "B": "乙"}, "A")]
    )
    task = MCQTask([a, b], num_samples=2)
    assert len(task.prompts) == 6 and task.slots[:3] == [(0, 0, 0), (0, 1, 0), (0, 1, 1)]
    texts = ["想\n</think>\n答案：A", "想\n</think>\n答案：B", "想\n</think>\n无法确定"]
    texts += ["想\n</think>\n答案：B", "想\n</think>\n\\boxed{A}", "还在想"]
    rows, summary = task.score([_gen(t) for t in texts], "m", GenerationSettings())
    assert [(r["benchmark"], r["sample"], r["item"], r["prediction"]) for r in rows][3:] == [
        ("A", 1, 0, "B"),
        ("B", 1, 0, "A"),
        ("B", 1, 1, None),
    ]
    first, second = summary["benchmarks"]["A"], summary["benchmarks"]["B"]
    assert (first["n"], first["samples"], first["sample_accuracies"], first["unreadable"]) == (1, 2, [1.0, 0.0], 0)
    assert (second["n"], second["sample_accuracies"], second["unreadable"], second["answers"]) == (2, [0.5, 0.0], 2, 4)


def test_mcq_prompt_runs_with_thinking_on(tiny_model_dir):
    """Qwen3.5's template opens the thinking block after the MCQ prompt; the letter is read after </think>."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = MCQItem(MEDQA_4["question"], MEDQA_4["options"], "D")
    for style in ("medgspo", "huatuo"):
        rendered = ChatFormat().render_prompt(tokenizer, build_prompt(item, style))
        assert rendered.endswith("<think>\n") and "D. 24小时内" in rendered
    assert "A、B、C、D中的一个" in build_prompt(item)


# ---- the command on the tiny model --------------------------------------------------------------------------------
def _run(tiny_model_dir, out, *argv):
    common = ["--model", str(tiny_model_dir), "--name", "tiny", "--max_new_tokens", "4", "--batch_size", "8"]
    return main(["eval", "--task", "mcq", *argv, *common, "--output_dir", str(out), "--no_progress"])


@pytest.mark.slow
def test_cli_several_published_benchmarks_one_table(tiny_model_dir, medqa, cmmlu, tmp_path, capsys):
    cmexam = tmp_path / "cmexam.csv"
    cmexam.write_text('Question,Options,Answer\n有机磷中毒首选的解毒药是,"A 阿托品\nB 新斯的明",A\n', encoding="utf-8")
    five, four = medqa
    argv = ["--data", str(five), str(four), "--data", str(cmmlu), "--data", str(cmexam), "--subjects", "medical"]
    assert _run(tiny_model_dir, tmp_path / "out", *argv, "--limit", "1") == 0
    out = capsys.readouterr().out
    assert "| benchmark | model | n | accuracy [95% CI] | unreadable |" in out
    for line in ("| MedQA-MCMLE (5 options) | tiny | 1 |", "| MedQA-MCMLE (4 options) | tiny | 1 |"):
        assert line in out
    assert "| CMMLU | tiny | 8 |" in out and "| CMExam | tiny | 1 |" in out
    table = json.loads((tmp_path / "out" / "mcq_table.json").read_text(encoding="utf-8"))
    assert [r["benchmark"] for r in table["results"]] == [
        "MedQA-MCMLE (5 options)",
        "MedQA-MCMLE (4 options)",
        "CMMLU",
        "CMExam",
    ]
    assert all(0 <= r["unreadable"] <= r["answers"] == r["n"] for r in table["results"])
    assert table["benchmarks"]["MedQA-MCMLE (4 options)"]["key_mismatches"] == []  # --limit 1 keeps the good row
    report = (tmp_path / "out" / "mcq.md").read_text(encoding="utf-8")
    assert "## CMMLU: per subject" in report and "| traditional_chinese_medicine |" in report
    assert "marketing" not in report
    rows = [
        json.loads(x) for x in (tmp_path / "out" / "mcq_generations.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(rows) == 11 and {r["benchmark"] for r in rows} == {r["benchmark"] for r in table["results"]}


@pytest.mark.slow
def test_cli_samples_and_key_mismatch_report(tiny_model_dir, medqa, tmp_path, capsys):
    _, four = medqa
    argv = ["--data", str(four), "--sample", "--num_samples", "2", "--mcq_prompt", "huatuo", "--seed", "3"]
    assert _run(tiny_model_dir, tmp_path / "out", *argv) == 0
    assert "sd over samples [min, max]" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "mcq.json").read_text(encoding="utf-8"))["tiny"]
    bench = summary["benchmarks"]["MedQA-MCMLE (4 options)"]
    assert (bench["n"], bench["samples"], bench["answers"], len(bench["sample_accuracies"])) == (2, 2, 4, 2)
    assert summary["do_sample"] is True and summary["prompt_style"] == "huatuo" and summary["num_samples"] == 2
    report = (tmp_path / "out" / "mcq.md").read_text(encoding="utf-8")
    assert "1 row(s) where `options[answer_idx]` != `answer`" in report and f"{four}:2: answer:" in report


def test_cli_bad_published_file_is_one_error_line(tmp_path, capsys):
    folder = tmp_path / "test"
    folder.mkdir()
    (folder / "anatomy.csv").write_text(f"{CMMLU_HEADER}\n0,问？,甲,乙,丙,丁,F\n", encoding="utf-8")
    assert main(["eval", "--task", "mcq", "--data", str(folder), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ") and f"{folder / 'anatomy.csv'}:2: Answer: 'F' is not among the options ABCD" in err
    )
