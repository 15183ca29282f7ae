"""An assessment as JSON, Markdown and a rich table."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..errors import ConfigurationError
from ..files import as_path
from ..visible import visible
from .modeler import Assessment


def to_json(assessment: Assessment) -> str:
    return json.dumps(assessment.as_dict(), indent=2)


#: Characters that make Markdown markup (HTML, links, images, code, emphasis, tables):
#: each is written after a backslash, which CommonMark reads as the character itself.
_MARKUP = re.compile(r"([\\`*_\[\]<>&|~!#])")


def _cell(text: str) -> str:
    """``text`` for one Markdown table cell or line: :func:`_shown`, then every character
    that could make markup (``<``, ``[``, ``|``, ...) backslash-escaped, so a name shows
    as written wherever the Markdown is rendered."""
    return _MARKUP.sub(r"\\\1", _shown(text))


def _shown(text: str) -> str:
    """``text`` (a guard name may hold anything) with line breaks, control and bidi
    characters as escapes and unpaired surrogates, which no file can hold, as ``?``."""
    return visible(text).encode("utf-8", "replace").decode("utf-8")


def _joined(ids: list[str]) -> str:
    return ", ".join(_cell(i) for i in ids)


def to_markdown(assessment: Assessment) -> str:
    # every text is escaped, the catalogue's too: a catalogue file's name or a caller's
    # Assessment may hold anything, and a code span cannot escape a backtick
    lines = [f"# Threat model: {_cell(assessment.subject or assessment.catalogue)}", "",
             f"Catalogue {_cell(assessment.catalogue)}, {_cell(assessment.timestamp)}. "
             f"**Risk {assessment.risk_score:g}/100 ({_cell(assessment.risk_level)})**.", "",
             "## Controls", "", "| control | in place | source | detail |", "|---|---|---|---|"]
    for c in assessment.controls:
        lines.append(f"| {_cell(c.name or c.id)} | {'yes' if c.implemented else 'no'} | "
                     f"{_cell(c.source)} | {_cell(c.detail)} |")
    lines += ["", "## Threats left open", "",
              "| threat | severity | likelihood | missing controls | OWASP | ATLAS techniques "
              "| ATLAS mitigations |", "|---|---|---|---|---|---|---|"]
    for t in assessment.threats:
        lines.append(f"| {_cell(t.category)} | {_cell(t.severity)} | {_cell(t.likelihood)} | "
                     f"{_joined(t.missing_controls)} | {_joined(t.owasp) or '–'} | "
                     f"{_joined(t.atlas_techniques) or '–'} | "
                     f"{_joined(t.atlas_mitigations)} |")
    lines += ["", "## Recommendations, most risk removed first", ""]
    lines += [f"{i}. {_cell(r)}" for i, r in enumerate(assessment.recommendations, 1)]
    return "\n".join(lines) + "\n"


def write(assessment: Assessment, json_path: str | Path | None = None,
          markdown_path: str | Path | None = None, *,
          sources: Iterable[str | Path] = ()) -> None:
    """Write the JSON and/or Markdown files (a path of ``None`` or ``""`` is not written).
    Raises :class:`ConfigurationError` naming the file for one that cannot be written (a
    folder, a missing folder, a full disk), and before writing anything for a path that
    is no path (NUL), both paths naming one file (the Markdown replaced the JSON) or a path
    naming one of ``sources``, the files the assessment was read from (a model config)."""
    targets = [(as_path(path, what), render) for path, what, render in (
        (json_path, "json_path", to_json), (markdown_path, "markdown_path", to_markdown))
        if path]
    if len(targets) == 2 and _same_file(targets[0][0], targets[1][0]):
        raise ConfigurationError(f"cannot write the JSON and the Markdown both to "
                                 f"{_shown(str(targets[1][0]))}: the one written second "
                                 "would replace the other; expected two different files")
    for path, _ in targets:
        for source in sources:
            if _same_file(path, as_path(source, "source")):
                raise ConfigurationError(f"cannot write {_shown(str(path))}: it is "
                                         f"{_shown(str(source))}, which the assessment was "
                                         "read from; expected another file")
    for path, render in targets:
        write_text(path, render(assessment))


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same file through any link, or (one not
    there yet) the same path once symbolic links are followed."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8. Raises :class:`ConfigurationError` naming the
    file and the reason for one that cannot be written (a folder, a missing folder, a name
    too long, a full disk)."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:  # a full disk's error carries no file name of its own
        raise ConfigurationError(f"cannot write {_shown(str(path))}: "
                                 f"{exc.strerror or exc}; expected a file in an existing "
                                 "folder") from exc


def table(assessment: Assessment) -> Table:
    """Controls with their state, and the threats each leaves open."""
    result = Table(title=f"threat model: "
                         f"{escape(_shown(assessment.subject or assessment.catalogue))}"
                         f" — risk {assessment.risk_score:g}/100 "
                         f"({escape(_shown(assessment.risk_level))})")
    for column in ("control", "in place", "detail", "leaves open"):
        result.add_column(column)
    open_threats: dict[str, list[str]] = {}
    for threat in assessment.threats:
        for cid in threat.missing_controls:
            open_threats.setdefault(cid, []).append(threat.id)
    for c in assessment.controls:
        mark = "[green]yes[/]" if c.implemented else "[red]no[/]"
        result.add_row(escape(_shown(c.name or c.id)), mark, escape(_shown(c.detail)),
                       escape(_shown(", ".join(open_threats.get(c.id, [])))))
    return result
