"""Model-written HTML keeps paragraphs, emphasis, lists and allowed links; nothing else."""

from __future__ import annotations

from pushgen.generate.html_safety import sanitize_model_html


def allowed(url: str) -> bool:
    return url.startswith("https://shop.example/")


def test_hostile_html_is_cut_to_the_allowlist():
    hostile = ('<p>Hi <b>Ann</b>, <em>new</em> in:<script>alert(1)</script></p>'
               '<form action="//evil.example/"><input name="card">Pay</form>'
               '<img src="//evil.example/pixel.gif"><style>p{color:red}</style>'
               '<a href="javascript:alert(1)">js</a><a href="//evil.example/x">proto</a>'
               '<a href="data:text/html,hi">data</a><a href="https://evil.example/">far</a>'
               '<a href="https://shop.example/p/1" onclick="steal()">ours</a>'
               '<iframe src="https://evil.example/"></iframe><!-- hidden -->'
               '<ul><li>one</li></ul><p onmouseover="x()">end<br></p>')
    out = sanitize_model_html(hostile, allowed)
    for bad in ("script", "alert", "form", "input", "img", "pixel", "style", "color:red",
                "javascript:", "//evil", "data:", "evil.example", "onclick", "iframe",
                "hidden", "onmouseover"):
        assert bad not in out, bad
    assert '<a href="https://shop.example/p/1">ours</a>' in out
    assert "<b>Ann</b>" in out and "<em>new</em>" in out and "<li>one</li>" in out
    assert "<br>" in out and "far" in out and "Pay" in out   # text of removed tags stays


def test_plain_copy_is_unchanged():
    text = '<p>The <strong>Linen Shirt</strong> is $34.00 &amp; light.</p>'
    assert sanitize_model_html(text, allowed) == text


def test_links_hiding_their_host_are_dropped_even_if_the_caller_would_allow_them():
    out = sanitize_model_html('<a href="https://shop.example@evil.example/p">x</a>'
                              '<a href="https:\\\\evil.example/">y</a>'
                              '<a href=" jav&#x09;ascript:alert(1)">z</a>'
                              '<a href="HTTPS://Shop.Example/p/brown bread">ok</a>', allowed)
    assert "evil" not in out and "javascript" not in out
    assert out == '<a>x</a><a>y</a><a>z</a><a href="https://shop.example/p/brown%20bread">ok</a>'
