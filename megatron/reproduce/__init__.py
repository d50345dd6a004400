"""Reproduction of the DeepSpeed Data Efficiency tables at small scale: the paper's cases and claims
(``paper``), the scaled recipes (``recipes``), the harness that trains and evaluates every case with the ordinary
entry scripts (``harness``) and the report (``report``). ``tools/reproduce_paper.py`` is its command line.
"""
