"""Training for task cells: the loop (``train``), one optimiser step eager or CUDA-graphed (``train_step``) and
deterministic algorithms (``determinism``).

May import: the contracts, ``models``, ``kernels`` and ``harness.kinds.tasks``.
"""
