"""Records and their shape: loading and validating medical-o1 data, the split, token lengths, the chat format
shared by every stage, and the embedded tiny Qwen3.5 model with its tokenizer.
"""
