"""The research harness beside the product: the paper's claims reproduced (``sid4llm reproduce-paper``), the
cold-start study (``sid4llm cold-start``), the settings every compared ID method shares, and paired bootstrap
intervals. It builds on the product (data, IDs, training, evaluation, commands); nothing on the product path
imports it (tests/test_layout.py)."""
