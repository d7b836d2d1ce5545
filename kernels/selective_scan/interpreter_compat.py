"""Make triton 3.6's CPU interpreter (TRITON_INTERPRET=1) work with NumPy >= 2.4.

The interpreter turns a loop bound such as ``range(n_chunks)`` into a Python int with
``int(array_of_shape_(1,))``, which NumPy 2.4 no longer allows ("only 0-dimensional arrays can be
converted to Python scalars").  ``install()`` wraps the interpreter's tensor patcher so ``__index__``
takes the single element explicitly.  It touches nothing when triton is compiled normally.

Triton 3.9's interpreter can also hand a masked load a mask stored as int32 (from `scalar & tensor`
of int1 values), which its C++ load then rejects ("mask has unsupported dtype"); masks of loads and
stores are cast to bool.
"""
from __future__ import annotations


def install() -> bool:
    """Patch the interpreter if it is importable; return True when the patch is in place."""
    try:
        from triton.runtime import interpreter
    except Exception:  # pragma: no cover - triton missing or too different
        return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_ssmbench_compat", False):
        return original is not None

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._ssmbench_compat = True
    interpreter._patch_lang_tensor = patched
    _patch_masks(interpreter)
    return True


def _patch_masks(interpreter) -> None:
    import numpy as np

    builder = getattr(interpreter, "InterpreterBuilder", None)
    if builder is None:  # pragma: no cover - a different interpreter layout
        return

    def as_bool(mask):
        if mask is not None and getattr(mask, "data", None) is not None and mask.data.dtype != np.bool_:
            mask = interpreter.TensorHandle(mask.data.astype(np.bool_), mask.dtype)
        return mask

    load, store = builder.create_masked_load, builder.create_masked_store

    def create_masked_load(self, ptrs, mask, other, *a, **k):
        return load(self, ptrs, as_bool(mask), other, *a, **k)

    def create_masked_store(self, ptrs, value, mask, *a, **k):
        return store(self, ptrs, value, as_bool(mask), *a, **k)

    builder.create_masked_load, builder.create_masked_store = create_masked_load, create_masked_store
