"""ssmbench harness: suite files -> cells -> rows -> tables -> reports and diffs.

One package per stage of the data flow.  A module imports only from its own stage and the stages below it
(tests/test_layers.py checks this, lazy imports included, and that there are no import circles):

=========================  =========================================================================
stage (bottom to top)      what it owns
=========================  =========================================================================
contracts (this folder)    ``cells`` (Cell, rows, cell outcomes), ``registry``, ``config_types``,
                           ``errors`` (Issue, SuiteError), ``dotted`` (dotted-key helpers)
``kernels``, ``models``    the kernels and the models (top-level packages; they import only the contracts)
``harness.kinds``          what a cell of each kind does: task (training), speed, memory, decode, with
                           their helpers ``bench/``, ``tasks/`` and ``training/``
``harness.suite``          the suite language: YAML loading, schema, expansion into cells, overrides,
                           inert-axis warnings, planning several files at once
``harness.store``          the results store (rows.jsonl -> parquet/CSV) and run metadata (meta.json)
``harness.run``            running cells: the runner, executors (local, process, Ray), CUDA MPS, progress
``harness.analysis``       reading runs back: report, diff, compare (and their command-line handlers)
``harness.cli``            thin: parses arguments and calls a stage
=========================  =========================================================================
"""
