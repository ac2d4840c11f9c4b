"""Evaluation of the trained diffusion models (hoshikage/trained) on benchmarks/eval/*.jsonl: see __main__.py."""
