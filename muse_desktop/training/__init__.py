"""Fine-tuning: config, data, the recipe (run in a child process), evaluation and export.

Importing this package imports nothing heavy; torch, transformers and peft are
imported by the modules that need them, when they run.
"""
