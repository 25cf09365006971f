"""Every docstring of the package parses as reStructuredText without a warning: the API page is
built from them with Sphinx under -W, so an indented equation without ``::`` or a stray ``|S|``
would otherwise fail the book's build at the end of CI rather than here, in seconds."""

from __future__ import annotations

import importlib
import inspect
import io
import pkgutil

import docutils.core
import pytest

import mia_utils


def _modules():
    return sorted(m.name for m in pkgutil.walk_packages(mia_utils.__path__, "mia_utils.") if not m.name.endswith("__main__"))


def _docstrings(module):
    yield "module", module.__doc__ or ""
    for name, obj in vars(module).items():
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
            yield name, inspect.getdoc(obj) or ""
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) or isinstance(member, property):
                        yield f"{name}.{attr}", member.__doc__ or ""  # its own, not one inherited from torch


@pytest.mark.parametrize("name", _modules())
def test_docstrings_are_valid_restructuredtext(name):
    module = importlib.import_module(name)
    bad = []
    for where, doc in _docstrings(module):
        stream = io.StringIO()
        docutils.core.publish_doctree(inspect.cleandoc(doc), settings_overrides={"warning_stream": stream,
                                                                                  "report_level": 2})
        if stream.getvalue().strip():
            bad.append(f"{where}: {stream.getvalue().strip().splitlines()[0]}")
    assert not bad, f"{name}: " + "; ".join(bad)
