"""The main job end to end on the tiny model, shortened: SFT -> GSPO -> evaluation -> report and summary.json."""

import json

import pytest

from medgspo.cli import main
from medgspo.pipeline import route_arguments
from medgspo.pipeline.findings import findings
from medgspo.pipeline.job import even_sample
from medgspo.pipeline.report import pick_samples, readable, summary_document

SHORT = [
    "--sft.max_steps",
    "2",
    "--sft.max_train_samples",
    "8",
    "--sft.max_length",
    "512",
    "--gspo.max_steps",
    "2",
    "--gspo.max_prompts",
    "8",
    "--gspo.max_completion_length",
    "12",
    "--gspo.per_device_train_batch_size",
    "8",
    "--gspo.num_generations",
    "4",
    "--eval_limit",
    "3",
    "--eval_seen",
    "2",
    "--eval_max_new_tokens",
    "12",
]


def test_flags_are_routed_to_each_stage():
    routed = route_arguments(
        [
            "--model_name_or_path",
            "m",
            "--sft.learning_rate=1e-4",
            "--gspo.beta",
            "0.01",
            "--pretrain.num_train_epochs",
            "2",
            "--pretrain",
            "yes",
            "--judge_backend",
            "openai",
            "--skip_gspo",
            "--gspo.lora_target_modules",
            "q_proj",
            "v_proj",
        ],
        {"judge_backend"},
    )
    assert routed["pipeline"] == ["--pretrain", "yes", "--skip_gspo"]  # the judge's flags: GSPO's parser only
    assert routed["pretrain"] == ["--model_name_or_path", "m", "--num_train_epochs", "2"]
    assert routed["sft"] == ["--model_name_or_path", "m", "--learning_rate=1e-4"]
    assert routed["gspo"] == [
        "--model_name_or_path",
        "m",
        "--beta",
        "0.01",
        "--judge_backend",
        "openai",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    ]


def test_one_judge_config_is_parsed_once_checked_once_and_shared(tmp_path, monkeypatch):
    """``--judge_model`` is parsed into one JudgeConfig (with the GSPO recipe's judge keys), checked once, and that
    same object reaches GSPO and evaluation, with one cache file in the run folder."""
    from types import SimpleNamespace

    import medgspo.pipeline.job as job

    seen: dict[str, list] = {"preflight": [], "gspo": [], "eval": []}
    monkeypatch.setattr(job, "preflight", seen["preflight"].append)
    sft = SimpleNamespace(
        summary={"model_path": "m", "base_model": "m"}, held_out=[], trained=[], adapter="a", metrics=[]
    )
    monkeypatch.setattr("medgspo.train.sft.run_sft", lambda *configs: sft)
    monkeypatch.setattr(
        "medgspo.train.gspo.run_gspo",
        lambda *configs, judge_checked: seen["gspo"].append((configs[2], judge_checked)) or sft,
    )
    monkeypatch.setattr(job, "evaluate_stages", lambda pipe, judge, *stages: seen["eval"].append(judge) or {})
    monkeypatch.setattr(job, "write_outputs", lambda inputs, pipe, adapter: inputs)
    run_dir = tmp_path / "run"
    argv = ["--run_dir", str(run_dir), "--pretrain", "no", "--judge_backend", "openai", "--judge-model", "judge-x"]
    job.run_pipeline([*argv, "--judge_concurrency", "3"])
    (config,) = seen["preflight"]
    assert seen["gspo"] == [(config, True)] and seen["gspo"][0][0] is config  # checked: GSPO does not check again
    assert seen["eval"] == [config] and seen["eval"][0] is config
    assert (config.judge_model, config.judge_concurrency) == ("judge-x", 3)
    assert config.judge_cache == str(run_dir / "judge_cache.sqlite")


@pytest.mark.slow
def test_pipeline_end_to_end(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["pipeline", "--model_name_or_path", str(tiny_model_dir), "--run_dir", str(run_dir), *SHORT]
    argv += ["--pretrain", "yes", "--pretrain.max_steps", "2", "--pretrain.max_train_samples", "8"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out, console = captured.out, captured.out + captured.err
    assert "after SFT" in out and "after GSPO" in out and str(run_dir / "report.md") in out
    assert "GSPO - SFT, paired on the" in out  # the headline
    # a console a person can read: the stage bars, no metric dicts (they go to metrics.jsonl; --verbose prints them)
    assert "SFT:" in console and "GSPO:" in console and "{'loss'" not in console and "'reward':" not in console
    assert "A heldout question" in out and "A seen question" in out and "\ufffd" not in out
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    for section in (
        "## Pretraining (the tiny model only)",
        "## SFT",
        "## GSPO",
        "## Evaluation on held-out questions",
        "## Evaluation on seen questions",
        "95%",
        "![reward]",
        "CPU cores, torch",
        "threads",
        "Seeds: split 42, pretrain 42, sft 42, gspo 42, eval 0",
        "Picked as",
    ):
        assert section in report, section
    assert "\ufffd" not in report
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert set(summary) == {"wall_s", "models", "paired"} and summary["wall_s"] > 0
    for paired in summary["paired"].values():  # GSPO minus SFT on the questions both were judged on, or None
        assert paired is None or (set(paired) == {"n", "mean", "ci"} and paired["ci"][0] <= paired["mean"])
    assert set(summary["models"]) == {"base", "sft", "gspo"}
    for model in summary["models"].values():
        assert model["heldout"]["n"] == 3 and model["seen"]["n"] == 2
        for split in model.values():
            assert set(split) == {"n", "format_compliance", "mean_score", "ci", "distinct_answers"}
            assert len(split["ci"]) == 2
    heldout = json.loads((run_dir / "eval" / "heldout" / "eval.json").read_text())
    assert summary["models"]["sft"]["heldout"]["mean_score"] == heldout["sft"]["mean_score"]  # the report's numbers
    assert (run_dir / "gspo" / "plots" / "tier_mix.png").is_file()
    # The base the three models share is the pretrained folder, not the random-init one.
    assert json.loads((run_dir / "sft" / "sft_summary.json").read_text())["model_path"] == str(run_dir / "pretrain")


# ---- the report's pure parts ------------------------------------------------------------------------------------
def test_seen_questions_are_a_fixed_even_sample():
    assert even_sample(list(range(32)), 8) == [0, 4, 8, 12, 16, 20, 24, 28]
    assert even_sample(list(range(5)), 8) == [0, 1, 2, 3, 4]


def test_readable_drops_undecodable_bytes_and_says_so():
    assert readable("首选\ufffd利尿剂\ufffd") == "首选利尿剂 [2 undecodable bytes dropped]"
    assert readable("首选利尿剂。") == "首选利尿剂。"


def row(model, question, label, score, answer="答"):
    error = "undecided: no evidence" if label is None else None
    return {
        "model": model,
        "question": question,
        "reference": "参考",
        "label": label,
        "score": score,
        "error": error,
        "answer": answer,
        "thinking": "想\ufffd",
        "well_formed": True,
        "key_terms": ["参"],
    }


def test_the_sample_is_the_most_typical_question_not_the_best():
    rows = [
        row("sft", "q1", "A", 2.0),
        row("gspo", "q1", "A", 2.0),  # the best question: both right
        row("sft", "q2", "E", -1.0),
        row("gspo", "q2", "A", 2.0),  # typical: sft E, gspo A
        row("sft", "q3", "E", -1.0),
        row("gspo", "q3", "A", 2.0),
        row("sft", "q4", "E", -1.0),
        row("gspo", "q4", None, None),
    ]
    sample = pick_samples(rows)
    assert sample["question"] == "q2" and sample["key_terms"] == ["参"]
    assert sample["models"]["gspo"]["verdict"] == "A" and sample["models"]["sft"]["score"] == -1.0
    assert sample["models"]["sft"]["thinking"] == "想 [1 undecodable byte dropped]"
    assert pick_samples([]) is None


def summary(mean, low, high, distinct=1.0, fmt=1.0):
    return {
        "n": 32,
        "format_compliance": fmt,
        "mean_score": mean,
        "score_ci_low": low,
        "score_ci_high": high,
        "distinct_answers": distinct,
    }


def test_summary_json_has_the_issue_shape():
    doc = summary_document(
        123.456, {"heldout": {"sft": summary(-1.0, -1.0, -1.0)}, "seen": {"sft": summary(0.5, 0.1, 0.9)}}
    )
    assert doc == {
        "wall_s": 123.5,
        "models": {
            "sft": {
                "heldout": {
                    "n": 32,
                    "format_compliance": 1.0,
                    "mean_score": -1.0,
                    "ci": [-1.0, -1.0],
                    "distinct_answers": 1.0,
                },
                "seen": {
                    "n": 32,
                    "format_compliance": 1.0,
                    "mean_score": 0.5,
                    "ci": [0.1, 0.9],
                    "distinct_answers": 1.0,
                },
            }
        },
        "paired": {},
    }


def test_summary_json_pairs_gspo_with_sft_question_by_question():
    # q1: -1.0 -> +2.0 (+3.0); q2: +2.0 -> +2.0 (0.0); q3: SFT not judged, left out of the pairs
    rows = [
        {"model": m, "question": q, "score": s}
        for m, q, s in [("sft", "q1", -1.0), ("gspo", "q1", 2.0), ("sft", "q2", 2.0), ("gspo", "q2", 2.0)]
        + [("sft", "q3", None), ("gspo", "q3", 2.0), ("base", "q1", -1.0)]
    ]
    doc = summary_document(1.0, {}, {"seen": rows, "heldout": rows[:1]})
    assert doc["paired"]["seen"]["n"] == 2 and doc["paired"]["seen"]["mean"] == 1.5
    low, high = doc["paired"]["seen"]["ci"]
    assert 0.0 <= low <= 1.5 <= high <= 3.0
    assert doc["paired"]["heldout"] is None  # no question judged for both


def test_findings_say_whether_gspo_beat_sft_and_kept_its_variety():
    summaries = {
        "heldout": {"sft": summary(-1.0, -1.0, -1.0, 0.9), "gspo": summary(-1.0, -1.0, -1.0, 0.2)},
        "seen": {"sft": summary(0.2, -0.2, 0.6), "gspo": summary(1.5, 1.1, 1.9)},
    }
    notes = " ".join(findings(summaries, []))
    assert (
        "on seen questions: GSPO +1.50 [+1.10, +1.90] vs SFT +0.20 [-0.20, +0.60]: GSPO higher, intervals do not overlap"
        in notes
    )
    assert (
        "on heldout questions: GSPO -1.00 [-1.00, -1.00] vs SFT -1.00 [-1.00, -1.00]: the intervals overlap" in notes
    )
    assert "GSPO answers collapsed: 20% distinct vs 90%" in notes
    summaries["heldout"]["gspo"]["distinct_answers"] = 0.5
    assert "GSPO kept its variety: 50% distinct answers" in " ".join(findings(summaries, []))


def test_findings_pair_the_two_models_question_by_question():
    summaries = {"seen": {"sft": summary(0.5, -0.1, 1.1), "gspo": summary(1.0, 0.4, 1.6)}}
    scores = {"sft": [2.0, -1.0, -1.0, 2.0, None], "gspo": [2.0, 2.0, 2.0, 2.0, 2.0]}
    rows = [{"model": m, "question": f"q{i}", "score": s} for m, ss in scores.items() for i, s in enumerate(ss)]
    notes = " ".join(findings(summaries, [], {"seen": rows}))
    assert "the intervals overlap (no difference shown); paired, GSPO minus SFT on the 4 questions both were " in notes
    assert "judged on: +1.50 [+0.00, +3.00]." in notes
