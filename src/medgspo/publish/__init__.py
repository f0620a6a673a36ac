"""Publish a trained model: a model card written from the run's files, GGUF for llama.cpp and Ollama, the Hub upload.
``medgspo export`` (:mod:`medgspo.publish.cli`) merges the adapter (:mod:`medgspo.publish.merge`), then publishes.
"""
