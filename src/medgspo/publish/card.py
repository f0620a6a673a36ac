"""The model card ``medgspo export`` writes as ``README.md``: Hugging Face front matter and a body from the run.

    write_card(output, read_run(adapter), CardFacts(name="med-gspo", base_model="Qwen/Qwen3.5-4B"))

The front matter is built with ``huggingface_hub``'s ``ModelCardData`` (``base_model``, ``library_name``,
``pipeline_tag``, ``tags``, ``datasets``, ``language``, ``license`` when the base's own card states one, and a
``model-index`` of the exported model's evaluation results), so it parses as the Hub parses it. The body's figures
come from :mod:`medgspo.publish.card_sections`; this module adds the chat format, how to run the model, the
medical-use disclaimer and the list of files the card was written from. The training plots are copied to
``plots/`` beside the card.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgspo.modeling.generation import SamplingOptions
from medgspo.publish import card_sections as sections
from medgspo.publish.run_files import RunRecord

CARD_FILE = "README.md"
PLOTS_DIR = "plots"
EXAMPLE_QUESTION = "患者发热咳嗽3天，最可能的诊断是什么？"
DISCLAIMER = (
    "## Medical use\n\nThis model is a research artifact. It is not a medical device, has not been clinically "
    "validated, and must not be used to diagnose, treat or advise patients. Its answers can be wrong while sounding "
    "confident; the evaluation above used an automatic judge on a small question set. A qualified clinician must "
    "check anything it says before it informs a medical decision."
)


@dataclass
class CardFacts:
    """What the export knows beyond the run: names, the base's license, the GGUF files written."""

    name: str
    base_model: str
    license: str | None = None
    model_type: str | None = None
    repo_id: str | None = None
    gguf_files: list[str] = field(default_factory=list)


def is_hub_id(name: str | None) -> bool:
    """A Hub model or dataset id (``owner/name``), not a local path.

    >>> is_hub_id("Qwen/Qwen3.5-4B"), is_hub_id("runs/x/pretrain"), is_hub_id("/work/m"), is_hub_id("tiny")
    (True, False, False, False)
    """
    return bool(name) and bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not Path(name).exists()


def tags(record: RunRecord, facts: CardFacts) -> list[str]:
    """Tags from what was done: the stages run, the method, the architecture."""
    found = ["medical", "lora", "trl", *[s for s in ("sft", "gspo") if s in record.stages]]
    if "gspo" in record.stages:
        found.append("grpo")
    if facts.model_type:
        found.append(facts.model_type)
    if facts.gguf_files:
        found.append("gguf")
    return found


def eval_results(record: RunRecord, facts: CardFacts) -> list[Any]:
    """``model-index`` entries: the exported stage's mean judge score and format compliance on each split."""
    from huggingface_hub import EvalResult

    results = []
    dataset = _dataset_name(record)
    for split, models in record.evaluation.items():
        row = models.get(record.stage or "") if isinstance(models, dict) else None
        if not isinstance(row, dict):
            continue
        for metric, value in (
            ("mean_judge_score", row.get("mean_score")),
            ("format_compliance", row.get("format_compliance")),
        ):
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=dataset,
                    dataset_name=f"{dataset} ({split} questions)",
                    dataset_split=split,
                    metric_type=metric,
                    metric_value=round(float(value), 4),
                    metric_name=f"{metric.replace('_', ' ')} ({split})",
                )
            )
    return results


def _dataset_name(record: RunRecord) -> str:
    sft = record.stages.get("sft")
    sources = ((sft.summary or {}).get("sources") if sft else None) or []
    return Path(sources[0]).stem if sources else "medgspo-eval"


def card_data(record: RunRecord, facts: CardFacts):
    """The front matter as ``huggingface_hub.ModelCardData``."""
    from huggingface_hub import ModelCardData

    sft = record.stages.get("sft")
    datasets = [s for s in ((sft.summary or {}).get("sources") or []) if is_hub_id(s)] if sft else []
    return ModelCardData(
        base_model=facts.base_model if is_hub_id(facts.base_model) else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags(record, facts),
        datasets=datasets or None,
        language=[record.language] if record.language else None,
        license=facts.license,
        model_name=facts.name,
        eval_results=eval_results(record, facts) or None,
    )


def chat_section(record: RunRecord) -> str:
    """The chat format the model was trained with (``chat_format.json``)."""
    fmt = record.chat_format
    if fmt is None:
        return "## Chat format\n\nNo `chat_format.json` beside the adapter."
    rows = [
        ("format", fmt.get("name")),
        ("system prompt", fmt.get("system_prompt") or "none"),
        ("thinking (`enable_thinking`)", fmt.get("enable_thinking")),
        ("thinking kept in training targets (characters)", fmt.get("max_think_chars")),
    ]
    text = (
        "The tokenizer's chat template (`chat_template.jinja`) with Qwen's markup: `<|im_start|>role ... <|im_end|>`"
        ", the reasoning between `<think>` and `</think>`, then the answer. `chat_format.json` holds the settings."
    )
    return f"## Chat format\n\n{text}\n\n{sections.table(('setting', 'value'), rows)}"


def usage_section(record: RunRecord, facts: CardFacts) -> str:
    """How to run it: transformers, vLLM, llama.cpp / Ollama."""
    where = facts.repo_id or facts.name
    s = SamplingOptions()
    system = (record.chat_format or {}).get("system_prompt")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": EXAMPLE_QUESTION}
    ]
    python = (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
        f'model = AutoModelForCausalLM.from_pretrained("{where}", dtype="auto")\n'
        f"messages = {messages!r}\n"
        'ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")\n'
        f"out = model.generate(ids, max_new_tokens={s.max_new_tokens}, do_sample=True, temperature={s.temperature}, "
        f"top_p={s.top_p}, top_k={s.top_k})\n"
        "print(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))\n```"
    )
    vllm = f"```bash\nvllm serve {where}\n```"
    parts = ["## How to run it", "transformers:", python, "vLLM (OpenAI-compatible server):", vllm]
    if facts.gguf_files:
        first = facts.gguf_files[0]
        parts += [
            "llama.cpp and Ollama (GGUF files in this folder: " + ", ".join(f"`{f}`" for f in facts.gguf_files) + "):",
            f"```bash\nllama-server -m {first} --jinja\nollama create {facts.name.lower()} -f Modelfile\n"
            f"ollama run {facts.name.lower()}\n```",
        ]
    else:
        parts.append("GGUF (llama.cpp, Ollama): not exported; `medgspo export --gguf q8_0` writes one.")
    return "\n\n".join(parts)


def body(record: RunRecord, facts: CardFacts, plots: list[str]) -> str:
    """The markdown body below the front matter."""
    made = " then GSPO" if "gspo" in record.stages else ""
    intro = (
        f"# {facts.name}\n\n`{facts.base_model}` fine-tuned for Chinese medical reasoning with LoRA SFT{made} on TRL, "
        f"the adapter merged into the base weights by `medgspo export` (adapter: `{record.adapter}`)."
    )
    provenance = "## Where these figures come from\n\n" + (
        "\n".join(f"- `{s}`" for s in record.sources) or "No run files were found beside the adapter."
    )
    training = "\n\n".join(
        [
            "## Training",
            sections.sft_section(record.stages.get("sft")),
            sections.gspo_section(record.stages.get("gspo")),
        ]
    )
    return "\n\n".join(
        [
            intro,
            training,
            sections.reward_section(record),
            sections.dynamics_section(plots),
            sections.evaluation_section(record),
            chat_section(record),
            usage_section(record, facts),
            DISCLAIMER,
            provenance,
        ]
    )


def write_card(output: Path, record: RunRecord, facts: CardFacts) -> Path:
    """Copy the plots beside the card, write ``README.md``, and return its path."""
    from huggingface_hub import ModelCard

    plots = []
    for stage in ("sft", "gspo"):
        for plot in record.stages[stage].plots if stage in record.stages else []:
            (output / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copy2(plot, output / PLOTS_DIR / plot.name)
            plots.append(f"{PLOTS_DIR}/{plot.name}")
    card = ModelCard(f"---\n{card_data(record, facts).to_yaml()}\n---\n\n{body(record, facts, plots)}\n")
    path = output / CARD_FILE
    card.save(path)
    return path


def base_license(base: str) -> str | None:
    """The ``license`` of the base's own model card (``README.md`` front matter): in a local base folder, or in
    the Hub cache for a Hub id (no download); ``None`` when neither has one."""
    from huggingface_hub import metadata_load, try_to_load_from_cache

    readme: Path | str | None = Path(base) / CARD_FILE
    if not Path(readme).is_file():
        readme = try_to_load_from_cache(base, CARD_FILE) if is_hub_id(base) else None
    if not isinstance(readme, (str, Path)) or not Path(readme).is_file():
        return None
    return (metadata_load(Path(readme)) or {}).get("license")
