"""EleutherAI's lm-evaluation-harness against ``medgspo serve``, as people run CMMLU / C-Eval: its
``local-completions`` model scores a multiple-choice task by log-likelihood (``/v1/completions`` with token ids,
``echo`` and ``logprobs``), its ``local-chat-completions`` model answers a generation task through the chat endpoint.
The tasks are local files written here (no network); the scores lm-eval computes are checked against the model's own
forward pass.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_chat import memorized_adapter

from medgspo.serve.app import BackgroundServer, create_app
from medgspo.serve.config import ServerConfig
from medgspo.serve.engine import ChatEngine

MODEL_ID = "medgspo-lm-eval"
MCQ = [
    {
        "question": "患者发热咳嗽三天，胸片示右下肺片状影，最可能的诊断是",
        "choices": ["肺炎", "骨折", "近视"],
        "answer": 0,
    },
    {"question": "胸痛三小时伴大汗，心电图ST段抬高，最可能的诊断是", "choices": ["胃炎", "急性心肌梗死"], "answer": 1},
    {
        "question": "糖尿病患者首选的口服降糖药是",
        "choices": ["二甲双胍", "阿司匹林", "青霉素", "维生素C"],
        "answer": 0,
    },
]
OPEN = [
    {"question": "肺炎的常见症状是什么？", "answer": "发热咳嗽"},
    {"question": "高血压患者应限制什么？", "answer": "钠盐"},
]


def write_task(folder: Path, name: str, rows: list[dict], spec: str) -> None:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    head = f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (folder / f"{name}.yaml").write_text(head + spec, encoding="utf-8")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    mcq = (
        'output_type: multiple_choice\ndoc_to_text: "{{question}}："\ndoc_to_choice: choices\n'
        "doc_to_target: answer\nmetric_list:\n  - metric: acc\n"
    )
    write_task(folder, "medgspo_mcq", MCQ, mcq)
    generate = (
        'output_type: generate_until\ndoc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["。"]\n  max_gen_toks: 1100\n  temperature: 0\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    write_task(folder, "medgspo_open", OPEN, generate)
    return folder


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory) -> ChatEngine:
    adapter = memorized_adapter(tiny_model_dir, tmp_path_factory.getbasetemp() / "memorized-adapter")
    return ChatEngine.load(str(tiny_model_dir), adapter)


def evaluate(folder: Path, model: str, model_args: dict, **kwargs) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(
        model=model,
        model_args={"model": MODEL_ID, **model_args},
        task_manager=TaskManager(include_path=str(folder)),
        log_samples=True,
        **kwargs,
    )


def loglikelihood(engine: ChatEngine, context: str, continuation: str) -> float:
    """What lm-eval should get: its own split of context and continuation tokens, scored by one forward pass."""
    whole = engine.tokenizer.encode(context + continuation, add_special_tokens=False)
    context_ids = engine.tokenizer.encode(context, add_special_tokens=False)
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([whole])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[i - 1, whole[i]]) for i in range(len(context_ids), len(whole)))


def test_local_completions_scores_a_multiple_choice_task(engine, tasks, tiny_model_dir):
    with BackgroundServer(create_app(engine, ServerConfig(MODEL_ID))) as server:
        args = {
            "base_url": server.url + "/v1/completions",
            "tokenizer_backend": "huggingface",
            "tokenizer": str(tiny_model_dir),
        }
        out = evaluate(tasks, "local-completions", args, tasks=["medgspo_mcq"])
    accuracy = out["results"]["medgspo_mcq"]["acc,none"]
    samples = out["samples"]["medgspo_mcq"]
    assert len(samples) == len(MCQ) and 0 <= accuracy <= 1
    for sample in samples:
        scores = [float(resp[0][0]) for resp in sample["resps"]]
        assert all(math.isfinite(s) and s < 0 for s in scores)
        for (context, continuation), score in zip((a for a in sample["arguments"]), scores, strict=True):
            assert score == pytest.approx(loglikelihood(engine, context, continuation), abs=1e-2)
    chosen = [max(range(len(s["resps"])), key=lambda i: s["resps"][i][0][0]) for s in samples]
    assert accuracy == pytest.approx(sum(c == s["target"] for c, s in zip(chosen, samples, strict=True)) / len(MCQ))


def test_local_chat_completions_answers_a_generation_task(engine, tasks):
    """Thinking switched off server-wide (``--default_chat_template_kwargs``), as lm-eval sends no template
    keywords: the answer reaches ``content``. The task asks for up to 1,100 new tokens, past the old fixed 1,024."""
    config = ServerConfig(MODEL_ID, default_chat_template_kwargs={"enable_thinking": False})
    with BackgroundServer(create_app(engine, config)) as server:
        args = {"base_url": server.url + "/v1/chat/completions"}
        out = evaluate(tasks, "local-chat-completions", args, tasks=["medgspo_open"], apply_chat_template=True)
    samples = out["samples"]["medgspo_open"]
    answers = [s["resps"][0][0] for s in samples]
    assert len(answers) == len(OPEN) and all(isinstance(a, str) and a.strip() for a in answers), answers
    assert "exact_match,none" in out["results"]["medgspo_open"]
