"""medgspo: Chinese medical reasoning with SFT + GSPO and an LLM judge, built on TRL.

Stages, one module each: ``data`` (load/validate), ``chat_format`` (the shared conversation layout), ``tiny_model``
(the embedded CPU model), ``sft`` (stage 1), ``judge`` (the 5-tier reward), ``pipeline`` (the main job) and ``cli``.
"""

__version__ = "0.1.0"
