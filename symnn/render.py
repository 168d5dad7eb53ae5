"""The only module that touches jinja2: one strict environment and the banner.

Templates live in the repository's top-level ``templates/``; an installed wheel carries them
as the data package ``symnn._templates``. Templates receive plain strings, ints and lists,
never SymPy objects.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

#: Bumped whenever emitted output changes format; part of every banner and cache key.
CODEGEN_VERSION = "1"


def template_dir() -> Path:
    """``templates/`` in a checkout (or editable install), else the installed data package."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if (checkout / "_shared" / "banner.jinja").is_file():
        return checkout
    installed = Path(__file__).resolve().parent / "_templates"
    if (installed / "_shared" / "banner.jinja").is_file():
        return installed
    raise FileNotFoundError(f"symnn templates not found in {checkout} or {installed}")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **context: object) -> str:
    """Render ``template`` (a path under ``templates/``) with ``context``."""
    return environment().get_template(template).render(
        template_name=template, codegen_version=CODEGEN_VERSION, **context
    )
