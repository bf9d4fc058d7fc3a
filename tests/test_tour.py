"""``python -m proxlib.tour`` (the README's tour of every operator) runs,
shows every registered operator, and its certificates say what it prints."""

from __future__ import annotations

import re

import proxlib
from proxlib import tour

_CERTIFICATE = re.compile(r"^certificate: optimality residual (\S+) (<=|>) rounding level (\S+)$")


def _blocks(text: str) -> list[tuple[str, str]]:
    """(title, the block's text) for every ``== title`` block of the tour."""
    parts = re.split(r"^== (.*)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def test_the_tour_shows_every_registered_operator_with_true_certificates(capsys, monkeypatch):
    called = set()
    for op in proxlib.OPERATORS.values():
        fn = getattr(proxlib, op.function.__name__)

        def counted(*args, _name=op.name, _fn=fn, **kwargs):
            called.add(_name)
            return _fn(*args, **kwargs)

        monkeypatch.setattr(proxlib, op.function.__name__, counted)
    tour.main()
    out = capsys.readouterr().out
    assert called == set(proxlib.OPERATORS), f"operators the tour does not show: {sorted(set(proxlib.OPERATORS) - called)}"
    blocks = _blocks(out)
    assert len(blocks) >= len(proxlib.OPERATORS)
    for title, body in blocks:
        lines = [m for m in map(_CERTIFICATE.match, body.splitlines()) if m]
        assert len(lines) == 1, f"block {title!r} prints {len(lines)} certificate lines"
        residual, sign, level = float(lines[0][1]), lines[0][2], float(lines[0][3])
        # the printed comparison is the true one, and only the thesis' approximate
        # exclusive step fails it (the tour says the certificate will tell)
        assert (residual <= level) == (sign == "<=")
        assert (sign == ">") == ("thesis' exclusive step" in title), title

