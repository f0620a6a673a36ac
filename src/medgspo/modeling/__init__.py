"""Models: the one way to load a base model (+ LoRA adapter of either Qwen3.5 layout) with its chat format, what a
LoRA adapts per layer kind, and batched generation. Shared by training, evaluation, chat, serving, export and plan;
it knows nothing of any stage.
"""
