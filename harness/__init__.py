"""asciitune: an evaluation and benchmark harness for LoRA fine-tuning of language models on ASCII art."""

__version__ = "0.1.0"
