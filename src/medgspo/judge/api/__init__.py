"""The API judge: the batch path every backend shares, the OpenAI-compatible client, retries, cache, accounting, the check before a run."""
