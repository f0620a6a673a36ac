"""Models: the one way to load a base model (+ LoRA adapter of either Qwen3.5 layout), the builders of the embedded
tiny model and the real Qwen3.5 tokenizer, what a LoRA adapts, batched generation, and the commands that need them.
"""
