"""Using a trained model: the generation engine, the think/answer stream splitter, terminal chat, adapter export,
and an OpenAI-compatible HTTP API with its web page (``medgspo chat``, ``medgspo serve``, ``medgspo export``)."""
