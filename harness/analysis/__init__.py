"""Reading runs back: the report (``report/``: tables, figures, expectations, tuned rows, seed statistics,
Markdown/HTML), ``diff`` (two runs, with statistics and a CI gate; ``seeds`` compares seed distributions
beside it), ``compare`` (run a suite at two commits and diff), ``history`` (a suite over many commits, with
``changepoint``'s step detection), ``bisect`` (the first regressed commit, by binary search with compare's
worktrees) and ``cli`` (the ``report``/``diff``/``compare``/``history``/``bisect`` commands).

May import every stage below it (contracts, models, kinds, suite, store, run).  Only harness.cli imports it.
"""
