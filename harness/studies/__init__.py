"""Studies: one-off measurements behind claims in the README and reports/ (each ``python -m harness.studies.NAME``).

Why here and not beside their output: a script that produced a claim is code, so it lives where it is imported,
linted and tested (tests/test_studies.py runs each at tiny sizes, or imports it where it needs a GPU), and a
change of the harness that breaks it fails CI.  Its output and the notes that explain it stay in ``reports/``.

============================  ==========================================================================
module                        output and notes
============================  ==========================================================================
``activation_memory``         reports/analysis/activation_memory/ (bytes per token kept for the backward)
``decode_step_kernels``       reports/analysis/decode_step_kernels/ (kernels per decode step)
``induction_extrapolation``   reports/gpu/README.md (where induction heads fail at other lengths)
``train_step_profile``        reports/gpu/h200-2026-12-02/ (per-step cost of the quick task cells)
``graph_step_timing``         reports/gpu/h200-2026-12-02/ (eager vs CUDA-graphed training step)
``determinism_check``         reports/gpu/h200-2026-12-02b/ (repeatability with train.deterministic)
``small_op_ab``               reports/gpu/h200-2026-12-02c/small_op_ab.txt (RMSNorm / depthwise conv A/B)
============================  ==========================================================================

May import: the contracts, ``models``, ``kernels`` and ``harness.kinds``; nothing above.
"""
