"""Chunked estimation of many shots on a Ray cluster: plan.py cuts the job,
engine.py runs it, cli.py is ``normalcrafter farm``."""
