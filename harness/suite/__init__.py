"""The suite language: a YAML file -> validated suites -> cells.

Owns: YAML loading with line marks (``yaml_loader``), the schema (``schema``), expansion of sweeps into
cells with stable ids, ``--set``/``--filter`` overrides (``expand``), warnings about axes that change no
model (``inert_axes``) and planning several files at once (``plan``).

May import: the contracts (harness.cells, registry, config_types, errors, dotted), ``models`` and
``harness.kinds`` (each kind's schema validates its cells).  Never the store, run or analysis stages.
"""
