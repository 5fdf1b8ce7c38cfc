"""Sphinx extension local to the book: keep the rendered book free of external URLs.

1. Jupyter Book always loads sphinx-thebe, which writes the URL of its JavaScript bundle on unpkg.com
   into every page (loaded only when a reader clicks "live code", which needs a Jupyter server this
   book does not have). :func:`drop_thebe` removes those scripts from each page.
2. References: see :class:`PlainIdentifierStyle`.

The book is read offline and must not contain a link or resource outside itself
(tests/test_book.py scans every HTML file). pybtex's ``unsrt`` style turns a reference's DOI, arXiv
id, PubMed id and URL into links to doi.org / arxiv.org / ncbi; the ``cxrplain`` style below prints
them as plain identifiers instead ("doi:10.1000/xyz"), which a reader can still resolve.
"""

from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.template import field, join, optional, sentence, words


class PlainIdentifierStyle(UnsrtStyle):
    """``unsrt`` with DOIs, arXiv ids, PubMed ids and URLs as plain text, never as links."""

    default_sorting_style = "author_year_title"

    def format_web_refs(self, e):
        return sentence[
            optional[words["URL:", field("url", raw=True)]],
            optional[join["arXiv:", field("eprint", raw=True)]],
            optional[join["PMID:", field("pubmed", raw=True)]],
            optional[join["doi:", field("doi", raw=True)]],
        ]


def drop_thebe(app, pagename, templatename, context, doctree):
    """Remove sphinx-thebe's scripts (its unpkg.com URL and the launcher) from a page."""

    def is_thebe(js) -> bool:
        body = getattr(js, "attributes", {}).get("body", "") or ""
        return "thebe" in str(js) or "THEBE_JS_URL" in body

    if "script_files" in context:
        context["script_files"] = [js for js in context["script_files"] if not is_thebe(js)]
    if "css_files" in context:
        context["css_files"] = [css for css in context["css_files"] if "thebe" not in str(css)]


def setup(app):
    register_plugin("pybtex.style.formatting", "cxrplain", PlainIdentifierStyle)
    app.connect("html-page-context", drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
