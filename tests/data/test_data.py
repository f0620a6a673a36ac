"""Loading and validating medical-o1 records: good files load, bad files name file, line and field."""

import json

import pytest
from conftest import GOOD

from medgspo.cli import main
from medgspo.data.records import (
    MAX_FIELD_CHARS,
    DataError,
    describe,
    fit_length,
    is_hub_id,
    load_records,
    read_file,
    term_problems,
    train_eval_split,
    validate_record,
)


def messages(err: DataError) -> list[str]:
    return [str(p) for p in err.problems]


# ---- the bundled data -------------------------------------------------------------------------------------------
def test_bundled_data_meets_the_spec(bundled_records):
    assert len(bundled_records) >= 240
    assert len({r["specialty"] for r in bundled_records}) >= 12
    assert len({r["Question"] for r in bundled_records}) == len(bundled_records)
    for r in bundled_records:
        assert r["Question"].rstrip().endswith(("？", "?")), r["Question"]
        assert len(r["Complex_CoT"]) >= 150
        assert 1 <= r["Response"].count("。") <= 3


def test_bundled_key_terms_and_ruled_out_hold_their_facts(bundled_records):
    """Every record carries 1-3 key terms, each verbatim in its answer, and 0-4 ruled-out alternatives, each in its
    reasoning and absent from its answer (what the reference judge's key-term rule relies on)."""
    for line, record in enumerate(bundled_records, start=1):
        assert 1 <= len(record["key_terms"]) <= 3 and len(record["ruled_out"]) <= 4, line
        assert term_problems(record, "data/medical_o1_zh.jsonl", line) == []
    assert sum(bool(r["ruled_out"]) for r in bundled_records) >= 200


def test_bundled_mcq_meets_the_spec():
    from medgspo.data.records import BUNDLED_MCQ

    items = [json.loads(line) for line in BUNDLED_MCQ.read_text(encoding="utf-8").splitlines()]
    assert len(items) >= 100
    for item in items:
        assert sorted(item["options"]) == ["A", "B", "C", "D", "E"]
        assert item["answer"] in item["options"] and item["explanation"]


# ---- good inputs ------------------------------------------------------------------------------------------------
def test_bom_crlf_and_extra_keys_load(tmp_path):
    path = tmp_path / "bom.jsonl"
    line = json.dumps({**GOOD, "extra": 1, "specialty": "respiratory"}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + (line + "\r\n" + line + "\r\n\r\n").encode("utf-8"))
    assert len(load_records(path).records) == 2


def test_json_array_and_parquet_load(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps([GOOD, GOOD], ensure_ascii=False), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([GOOD] * 3), tmp_path / "b.parquet")
    assert len(load_records(tmp_path / "a.json").records) == 2
    assert len(load_records(tmp_path / "b.parquet").records) == 3
    assert len(load_records(tmp_path).records) == 5  # a directory loads every supported file


# ---- bad inputs -------------------------------------------------------------------------------------------------
def test_every_problem_is_named_by_file_line_and_field(write_jsonl):
    path = write_jsonl(
        [
            GOOD,
            '{"Question": "问？", "Complex_CoT": "想"',  # truncated JSON
            {"Question": "问？", "Complex_CoT": "想"},  # missing Response
            {**GOOD, "Response": "   "},  # empty
            {**GOOD, "Complex_CoT": ["list"]},  # wrong type
            "[1, 2]",  # not an object
        ]
    )
    with pytest.raises(DataError) as info:
        load_records(path)
    assert messages(info.value) == [
        f"{path}:2: <json>: invalid JSON: Expecting ',' delimiter (column 38)",
        f"{path}:3: Response: missing",
        f"{path}:4: Response: empty",
        f"{path}:5: Complex_CoT: expected a string, got array",
        f"{path}:6: <record>: expected a JSON object, got array",
    ]


def test_skip_invalid_counts_what_it_skips(write_jsonl):
    path = write_jsonl([GOOD, "{oops", {"Question": 3, "Response": ""}, GOOD])
    report = load_records(path, skip_invalid=True)
    assert len(report.records) == 2 and report.skipped == 2 and len(report.problems) == 4


def test_wrong_encoding_names_the_line(tmp_path):
    path = tmp_path / "gbk.jsonl"
    good = json.dumps(GOOD, ensure_ascii=False)
    path.write_bytes(good.encode("utf-8") + b"\n" + good.encode("gbk") + b"\n")
    with pytest.raises(DataError) as info:
        load_records(path)
    assert messages(info.value)[0].startswith(f"{path}:2: <encoding>: not valid UTF-8")


@pytest.mark.parametrize(
    "content, expected",
    [(b"", "empty file"), (b"  \n\n", "empty file"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary file")],
)
def test_empty_and_binary_files(tmp_path, content, expected):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_records(path)
    assert expected in messages(info.value)[0] and str(path) in messages(info.value)[0]


def test_json_array_errors_name_the_element_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"Question": "问？", "Complex_CoT": "想", "Response": "答"},\n  {"Question": ""}\n]')
    records, problems = read_file(path)
    assert len(records) == 1
    assert [str(p) for p in problems][:1] == [f"{path}:3: Question: empty"]


def test_missing_path_and_unsupported_suffix(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="unsupported file type"):
        load_records(tmp_path / "x.csv")


def test_validate_record_is_pure():
    assert validate_record(GOOD, "f", 1) == []
    assert [p.field for p in validate_record({}, "f", 1)] == ["Question", "Complex_CoT", "Response"]


def test_optional_key_terms_and_ruled_out_are_type_checked(write_jsonl):
    assert validate_record({**GOOD, "key_terms": ["肺炎"], "ruled_out": []}, "f", 1) == []
    assert validate_record({**GOOD, "key_terms": None}, "f", 1) == []  # null: the record has none
    path = write_jsonl(
        [{**GOOD, "key_terms": "肺炎"}, {**GOOD, "ruled_out": ["结核", 3]}, {**GOOD, "key_terms": [""]}]
    )
    with pytest.raises(DataError) as info:
        load_records(path)
    assert messages(info.value) == [
        f"{path}:1: key_terms: expected a list of non-empty strings",
        f"{path}:2: ruled_out: expected a list of non-empty strings",
        f"{path}:3: key_terms: expected a list of non-empty strings",
    ]


def test_term_facts_are_named():
    record = {**GOOD, "key_terms": ["肺炎", "哮喘"], "ruled_out": ["肺炎", "结核"]}
    assert [str(p) for p in term_problems(record, "f", 7)] == [
        "f:7: key_terms: '哮喘' does not occur in Response",
        "f:7: ruled_out: '肺炎' occurs in Response (the answer)",
        "f:7: ruled_out: '结核' does not occur in Complex_CoT",
    ]


def test_an_absurd_field_is_over_length_without_a_tokenizer(write_jsonl):
    at_cap = {**GOOD, "Complex_CoT": "想" * MAX_FIELD_CHARS}
    assert validate_record(at_cap, "f", 1) == []
    huge = {**GOOD, "Question": "问" * (3 * 1024 * 1024)}  # 3 Mi characters (9 MiB of UTF-8)
    assert [str(p) for p in validate_record(huge, "f", 2)] == [
        f"f:2: Question: over-length: 3,145,728 characters, over the cap of {MAX_FIELD_CHARS:,}"
    ]


def test_hub_ids_are_told_apart_from_paths():
    assert is_hub_id("FreedomIntelligence/medical-o1-reasoning-SFT")
    assert not is_hub_id("data/medical_o1_zh.jsonl")


# ---- splitting, length control, statistics ----------------------------------------------------------------------
def test_split_is_deterministic_and_disjoint():
    rows = [{"i": i} for i in range(50)]
    a = train_eval_split(rows, 0.2, seed=1)
    assert a == train_eval_split(rows, 0.2, seed=1)
    assert a != train_eval_split(rows, 0.2, seed=2)
    train, held = a
    assert len(held) == 10 and len(train) == 40
    assert {r["i"] for r in train}.isdisjoint({r["i"] for r in held})
    assert len(train_eval_split(rows, 7, seed=0)[1]) == 7  # a count works too


def test_fit_length_drops_or_truncates_and_counts():
    rows = [{"Complex_CoT": "x" * n, "Response": "y"} for n in (5, 50, 500)]
    count = lambda r: len(r["Complex_CoT"]) + 1  # noqa: E731  one "token" per character
    cut = lambda r, excess: {**r, "Complex_CoT": r["Complex_CoT"][: len(r["Complex_CoT"]) - excess]}  # noqa: E731
    kept, truncated, dropped = fit_length(rows, count, 100, "drop")
    assert (len(kept), truncated, dropped) == (2, 0, 1)
    kept, truncated, dropped = fit_length(rows, count, 100, "truncate", cut)
    assert (len(kept), truncated, dropped) == (3, 1, 0)
    assert count(kept[-1]) == 100


def test_describe_counts_specialties():
    stats = describe([{**GOOD, "specialty": "a"}, {**GOOD, "specialty": "a"}, GOOD])
    assert stats["specialties"] == {"a": 2, "unspecified": 1}
    assert stats["Response"]["min"] == len(GOOD["Response"])


# ---- `medgspo data check` ---------------------------------------------------------------------------------------
def test_data_check_valid_file(capsys, write_jsonl):
    path = write_jsonl([{**GOOD, "specialty": "respiratory"}] * 3)
    assert main(["data", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "records: 3" in out and "respiratory" in out and "OK: 3 valid record(s)" in out


def test_data_check_lists_every_problem_and_fails(capsys, write_jsonl):
    path = write_jsonl([GOOD, "{bad", {**GOOD, "Response": 1}])
    assert main(["data", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"{path}:2: <json>: invalid JSON" in captured.out
    assert f"{path}:3: Response: expected a string, got int" in captured.out
    assert "INVALID: 2 problem(s)" in captured.err


def test_data_check_flags_a_3_mib_field_with_no_tokenizer(capsys, tmp_path):
    path = tmp_path / "huge.jsonl"
    rows = [GOOD, {**GOOD, "Question": "x" * (3 * 1024 * 1024) + "？"}]  # a 3 MiB question on line 2
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert main(["data", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert (
        f"{path}:2: Question: over-length: 3,145,729 characters, over the cap of {MAX_FIELD_CHARS:,}" in captured.out
    )
    assert "INVALID: 1 problem(s) in 1 record(s)" in captured.err


def test_data_check_nothing_valid(capsys, tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("")
    assert main(["data", "check", str(path)]) == 1
    assert "empty file" in capsys.readouterr().out


def test_data_check_counts_oversized_records(capsys, write_jsonl, tiny_model_dir):
    path = write_jsonl([GOOD, {**GOOD, "Complex_CoT": "很长的推理。" * 400}])
    assert main(["data", "check", str(path), "--model", str(tiny_model_dir), "--max-length", "256"]) == 0
    assert "records over 256 tokens: 1" in capsys.readouterr().out


def test_training_command_reports_bad_data_without_traceback(capsys, write_jsonl):
    path = write_jsonl(["{bad"])
    assert main(["sft", "--dataset_name", str(path), "--output_dir", str(path.parent / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().startswith("error: 1 problem(s)") and f"{path}:1: <json>" in err
