"""Reading runs back: the report (``report/``: tables, figures, expectations, Markdown/HTML), ``diff`` (two
runs, with statistics and a CI gate), ``compare`` (run a suite at two commits and diff) and ``cli`` (the
``report``/``diff``/``compare`` commands).

May import every stage below it (contracts, models, kinds, suite, store, run).  Only harness.cli imports it.
"""
