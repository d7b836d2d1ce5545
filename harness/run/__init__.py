"""Running cells: the runner (plan -> rows in a run folder, resume), the executors that run cells in this
process (``local``), in child processes (``process_executor``), on a Ray cluster (``ray_executor``), CUDA MPS
around them (``mps``), the per-cell wrapper that turns every failure into a row (``execute``) and progress.

May import: the contracts, ``harness.kinds``, ``harness.suite`` and ``harness.store``.  Never analysis or cli.
"""
