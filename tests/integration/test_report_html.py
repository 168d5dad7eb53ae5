"""The HTML report and the notebook view, seen the way a person sees them: rendered by a browser.

Each page is built (the XOR spec through ``symnn report --train``, and a softmax network with
L1 and L2), rendered by headless Chromium to a screenshot, and a copy with a script that writes
each ``<math>`` element's laid-out size into the DOM is dumped: every formula must have been
converted (no ``<merror>``, no LaTeX command left as text) and laid out with a size, and the
page must show as many formulas as the derivation has, and the training curve a point per epoch.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import symnn as sn
from symnn.cli import main
from symnn.derivation import Derivation, LEGEND
from symnn.errors import ConfigError
from symnn.train import History

pytest.importorskip("latex2mathml")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: written into the copy of a page before </body>: each <math>'s laid-out size as attributes
GEOMETRY = """<script>
for (const m of document.querySelectorAll("math")) {
  const r = m.getBoundingClientRect();
  m.setAttribute("data-w", r.width);
  m.setAttribute("data-h", r.height);
}
</script>"""


def _chromium() -> str:
    """The browser, or a skip outside CI; in CI (``CI=true``) a missing browser fails the test,
    so a broken CI image cannot pass by skipping."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "chromium not found: .ci/run installs it (apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


class _Page(HTMLParser):
    """What the checks read from a page: each <math>'s attributes and text, <merror> count,
    the data-eq/data-form of the blocks holding math, and the SVG polylines' points."""

    def __init__(self) -> None:
        super().__init__()
        self.maths: list[dict[str, str]] = []
        self.math_text: list[str] = []
        self.merror = 0
        self.forms: list[tuple[str | None, str | None]] = []
        self.polylines: dict[str, str] = {}
        self.scripts = 0
        self._depth = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        a = dict(attrs)
        if tag == "math":
            self.maths.append({k: v or "" for k, v in a.items()})
            self.math_text.append("")
            self._depth += 1
        elif tag == "merror":
            self.merror += 1
        elif tag == "div" and "data-form" in a:
            self.forms.append((a.get("data-eq"), a["data-form"]))
        elif tag == "polyline":
            self.polylines[a.get("data-series") or ""] = a.get("points") or ""
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "math":
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.math_text[-1] += data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _expected_maths(d: Derivation, fragment: bool = False) -> int:
    """How many formulas the derivation has: each equation's matrix form and index form, each
    function, and the legend's inline math; the page adds one per simplification."""
    n = sum(1 + (e.index is not None) for e in d.equations) + len(d.functions) + LEGEND.count("$") // 2
    return n if fragment else n + len(d.simplifications)


def _render(browser: str, page: Path, tmp: Path) -> tuple[Path, _Page]:
    """(screenshot of the page, the DOM of a copy after layout, with each <math>'s size)."""
    shot = tmp / f"{page.stem}.png"
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp / 'profile'}", "--window-size=1200,3000"]
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=60, check=True)
    copy = tmp / f"{page.stem}-geometry.html"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", GEOMETRY + "</body>"),
                    encoding="utf-8")
    dom = subprocess.run([*common, "--dump-dom", copy.as_uri()], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return shot, _parse(dom)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """Both pages built and rendered once for the checks below."""
    browser = _chromium()
    tmp = tmp_path_factory.mktemp("html")
    xor = tmp / "xor.html"
    assert main(["report", str(EXAMPLES / "xor.toml"), "--out", str(xor),
                 "--train", str(EXAMPLES / "xor.csv")]) == 0
    net = sn.Network([sn.Dense(3, 5, "tanh"), sn.Dense(5, 4, "softmax")], loss="cross_entropy",
                     l1=1e-3, l2=1e-2, name="soft")
    history = History(train_loss=[2.0 / k for k in range(1, 13)],
                         val_loss=[2.5 / k ** 0.5 for k in range(1, 13)], val_accuracy=[math.nan] * 12)
    from symnn.report_html import build_html_report

    soft = build_html_report(net, tmp / "soft.html", history=history,
                                            training_text="<script>alert(1)</script> & more")
    from symnn.spec_toml import load_spec

    return {"xor": (xor, load_spec(EXAMPLES / "xor.toml").network, *_render(browser, xor, tmp)),
            "soft": (soft, net, *_render(browser, soft, tmp))}


@pytest.mark.parametrize("name", ["xor", "soft"])
def test_every_formula_converts_and_lays_out(rendered, name: str) -> None:
    path, net, _, dom = rendered[name]
    d = sn.derive(net)
    assert dom.merror == 0
    assert len(dom.maths) == _expected_maths(d), (len(dom.maths), _expected_maths(d))
    sizes = [(float(m["data-w"]), float(m["data-h"])) for m in dom.maths]
    assert all(w > 0 and h > 0 for w, h in sizes), sizes
    # no LaTeX command left as text (latex2mathml writes an unknown one as <mi>\name</mi>)
    assert not [t for t in dom.math_text if "\\" in t]
    # every equation shown in matrix form, and in index form where it has one, by its id
    assert [(e, f) for e, f in dom.forms if f == "matrix"] == [(e.id, "matrix") for e in d.equations]
    assert [(e, f) for e, f in dom.forms if f == "index"] == [(e.id, "index") for e in d.equations
                                                              if e.index is not None]


@pytest.mark.parametrize("name", ["xor", "soft"])
def test_page_is_self_contained_and_escaped(rendered, name: str) -> None:
    text = rendered[name][0].read_text(encoding="utf-8")
    page = _parse(text)
    assert page.scripts == 0  # the user's "<script>" in the training text is text
    assert not re.search(r"<link|<img|<iframe|\bsrc=|\bhref=|@import|url\(", text)
    assert re.findall(r'"(https?://[^"]*)"', text) and all(
        u in ("http://www.w3.org/1998/Math/MathML", "http://www.w3.org/2000/svg")
        for u in re.findall(r'"(https?://[^"]*)"', text))
    if name == "soft":
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text


@pytest.mark.parametrize("name", ["xor", "soft"])
def test_screenshot_is_not_blank(rendered, name: str) -> None:
    from matplotlib.image import imread

    grey = imread(rendered[name][2])[..., :3].mean(axis=2)
    assert grey.std() > 0.05  # text and formulas on a white page
    assert (grey < 0.3).mean() > 0.002  # dark pixels: the text is there


def test_curve_has_a_point_per_epoch(rendered) -> None:
    text = rendered["xor"][0].read_text(encoding="utf-8")
    epochs = int(re.search(r"Trained (\d+) epochs", text).group(1))
    dom = rendered["xor"][3]
    points = [tuple(map(float, p.split(","))) for p in dom.polylines["train loss"].split()]
    assert len(points) == epochs > 1
    assert all(a[0] < b[0] for a, b in zip(points, points[1:]))  # one per epoch, in order
    soft = rendered["soft"][3]
    assert [len(soft.polylines[k].split()) for k in ("train loss", "validation loss")] == [12, 12]


def test_notebook_views() -> None:
    from latex2mathml.converter import convert

    d = sn.derive(sn.Network([sn.Dense(2, 3, "relu"), sn.Dense(3, 2, "softmax")],
                             loss="cross_entropy", l2=1e-3))
    fragment = d._repr_html_()
    page = _parse(fragment)
    assert page.merror == 0 and not [t for t in page.math_text if "\\" in t]
    assert len(page.maths) == _expected_maths(d, fragment=True)
    assert [e for e, f in page.forms if f == "matrix"] == [e.id for e in d.equations]
    latex = d._repr_latex_()
    assert latex.startswith("$$") and latex.endswith("$$")
    assert "merror" not in convert(latex.strip("$"), display="block")


def test_the_notebook_view_shows_each_recurrence() -> None:
    """A recurrent network's fragment has a section per loop (the forward recurrence and its
    backpropagation through time), every formula of their bodies and shares converted: the
    same equations the LaTeX report prints for step t."""
    x = sn.Input(3, 2)
    y = sn.Dense(4, 1, name="fc")(sn.GRU(2, 4, name="gru")(x))
    d = sn.derive(sn.Network(inputs=x, outputs=y, loss="mse", name="seq"))
    fragment = d._repr_html_()
    page = _parse(fragment)
    assert page.merror == 0 and not [t for t in page.math_text if "\\" in t]
    assert len(d.loops) == 2 and fragment.count("<h4>Recurrence ") == 2
    bodies = [e for loop in d.loops for e in (*loop.equations, *loop.contributions)]
    assert bodies and all(f'data-eq="{e.id}"' in fragment for e in bodies)
    names = 2 * len(d.loops)  # each loop's name, in its heading and in its note
    assert len(page.maths) == _expected_maths(d, fragment=True) + names + sum(
        1 + (e.index is not None) for e in bodies)


def test_mathml_escapes_what_latex2mathml_leaves_raw() -> None:
    """latex2mathml's convert() returns ``\\text{<b>}`` as a live tag; ours is text."""
    from symnn.report_html import mathml

    out = mathml(r"\text{<img src=x onerror=alert(1)>} x < y \leq z")
    assert "<img" not in out and "&lt;img" in out and "alert(1)&gt;</mtext>" in out
    assert "&lt;" in out and "≤" in out


def test_missing_latex2mathml_names_the_extra(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "latex2mathml", None)  # import fails as when not installed
    with pytest.raises(ConfigError, match=r"pip install \"symnn\[html\]\""):
        sn.derive(sn.Network([sn.Dense(2, 1, "sigmoid")], loss="bce"))._repr_html_()


def test_curve_svg_edges() -> None:
    from symnn.report_html import curve_svg

    for losses in ([0.5], [0.3] * 4, [1.0, -1.0, 0.0], [10.0, 1.0, 0.01]):
        page = _parse(curve_svg(losses))
        assert len(page.polylines["train loss"].split()) == len(losses)
        assert all(math.isfinite(float(c)) for p in page.polylines["train loss"].split()
                   for c in p.split(","))
    assert curve_svg([math.nan, math.nan]) == ""


def test_cli_refuses_an_unknown_suffix_before_training(tmp_path, capsys) -> None:
    assert main(["report", str(EXAMPLES / "xor.toml"), "--out", str(tmp_path / "r.docx"),
                 "--train", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert ".html, .pdf, .tex" in err and "r.docx" in err
