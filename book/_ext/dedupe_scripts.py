"""Drop repeated <script> tags from every page.

sphinx-thebe 0.3.1 registers its inline configuration script twice under Sphinx 7, so each
page declares ``const THEBE_JS_URL`` twice and the browser raises a SyntaxError on load. No
released sphinx-thebe fixes this for the pinned stack, so we remove exact repeats here. It
runs first: a later handler may end the event (emit_firstresult).
"""

from __future__ import annotations


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        # the repeats differ only in filename None vs "" (an inline script either way)
        key = (getattr(js, "filename", js) or "", repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept  # in place: later handlers (MathJax) add to this very list


def setup(app):
    app.connect("html-page-context", _dedupe, priority=1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
