"""Documented columns: each estimator declares the columns it returns, with what each one means, and
its docstring's Returns section is written from that declaration (so the two cannot drift apart;
``tests/test_structure.py`` checks that the frames have exactly these columns)."""

from __future__ import annotations


def returns_section(title: str, columns: dict[str, str]) -> str:
    """A numpydoc-style Returns block listing ``columns`` (name: meaning)."""
    width = max(len(c) for c in columns)
    lines = ["", "    Returns", "    -------", f"    {title}", ""]
    lines += [f"        {name:<{width}}  {text}" for name, text in columns.items()]
    return "\n".join(lines) + "\n"


def document(columns: dict[str, str], title: str):
    """Decorator: append the Returns section for ``columns`` to the function's docstring."""

    def wrap(fn):
        fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + returns_section(title, columns)
        return fn

    return wrap
