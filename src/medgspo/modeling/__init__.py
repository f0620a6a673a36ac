"""Models at inference: load a base model (+ LoRA adapter) with its chat format, and generate answers in batches.
Shared by training, evaluation, chat, serving and export; it knows nothing of any stage.
"""
