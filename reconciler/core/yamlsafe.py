"""Safe YAML loading that keeps line numbers.

Built on the parser's event stream (libyaml's C parser when present) rather than on a
constructor, so that every limit is ours to enforce: no custom tags, no duplicate keys, a
node budget that counts alias expansion ("billion laughs"), a nesting limit, a size limit and
strict UTF-8. Mapping keys are kept as the text written (so `1001:` and `yes:` stay strings),
timestamps stay strings (JSON Schema validates them), and every value and key remembers its line.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.core.shown import shown_value

try:  # the C parser is several times faster; fall back silently when libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the build of PyYAML
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_BYTES = 1024 * 1024
NODE_BUDGET = 50_000
MAX_DEPTH = 64

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_SCALAR_TAGS = {
    _STR,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_constructor = yaml.constructor.SafeConstructor()


class YamlProblem(Exception):
    """A file that cannot be loaded. `code` is the stable problem code, `line` 1-based."""

    def __init__(self, code: str, message: str, line: int | None = 1) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.line = line


@dataclass
class Document:
    """Loaded data plus where each node stands: value lines and key lines by path."""

    data: Any
    value_lines: dict[Path_, int] = field(default_factory=dict)
    key_lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_, *, key: bool = False) -> int:
        """The most specific known line for `path` (the key's line when `key`)."""
        if key and path in self.key_lines:
            return self.key_lines[path]
        p = tuple(path)
        while p:
            if p in self.value_lines:
                return self.value_lines[p]
            p = p[:-1]
        return self.value_lines.get((), 1)


def decode(raw: bytes) -> str:
    if len(raw) > MAX_BYTES:
        raise YamlProblem("YAML_TOO_LARGE", f"file is {len(raw)} bytes; the limit is {MAX_BYTES} (1 MiB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlProblem("YAML_ENCODING", f"file is not valid UTF-8 (byte {exc.start})", line) from None


def load(raw: bytes) -> Document:
    """Parse one YAML document from bytes. Raises YamlProblem for anything we refuse."""
    text = decode(raw)
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return _load(text, _Loader)
    except _ParserNestingLimit:
        # libyaml's own nesting limit (PyYAML >= 6.0.4 bundles one of 1,000 levels) can stop it while it scans a
        # long flow line ahead, before our builder has seen the level that passes MAX_DEPTH. The pure-Python parser
        # has no such limit and yields the same events, so our limit decides, at its line, whatever the version.
        return _load(text, yaml.SafeLoader)


class _ParserNestingLimit(Exception):
    """The parser refused the nesting before our own, lower, limit was reached."""


def _load(text: str, loader_class: Any) -> Document:
    loader = loader_class(text)
    last_line = text.count("\n") + 1  # the parser counts \r and U+2028 as breaks and may point past the end
    try:
        return _Builder(loader, _Lines(text)).build()
    except YamlProblem as problem:
        problem.line = min(problem.line, last_line) if problem.line is not None else None
        raise
    except yaml.MarkedYAMLError as exc:
        if exc.problem == "exceeded maximum nesting depth" and loader_class is not yaml.SafeLoader:
            raise _ParserNestingLimit from None
        mark = exc.problem_mark or exc.context_mark
        line = min(_Lines(text)(mark), last_line) if mark is not None else 1
        reason = exc.problem or str(exc)
        lines = text.splitlines()
        if 0 < line <= len(lines) and "\t" in lines[line - 1][: mark.column + 1 if mark else None]:
            reason += " (a tab: YAML is indented with spaces)"
        raise YamlProblem("YAML_PARSE", f"YAML does not parse: {reason}", line) from None
    except yaml.reader.ReaderError as exc:  # a control character: one line, at the character's line
        line = text.count("\n", 0, exc.position) + 1
        raise YamlProblem("YAML_PARSE", f"YAML does not parse: character #x{exc.character:04x} is not allowed "
                          f"({exc.reason})", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem("YAML_PARSE", "YAML does not parse: " + " ".join(str(exc).split()), 1) from None
    except RecursionError:
        raise YamlProblem("YAML_DEPTH", f"YAML nests deeper than {MAX_DEPTH} levels", 1) from None
    finally:
        loader.dispose()


class _Lines:
    """Line numbers as editors and git count them (`\n`). YAML also breaks lines at a lone `\r`, NEL,
    U+2028 and U+2029, so the parser's own line count can disagree; its character index cannot."""

    def __init__(self, text: str) -> None:
        self.exotic = any(c in text for c in "\r\x85\u2028\u2029")
        self.breaks = [m.start() for m in re.finditer("\n", text)] if self.exotic else []

    def __call__(self, mark: Any) -> int:
        if not self.exotic:
            return int(mark.line) + 1
        return bisect.bisect_left(self.breaks, mark.index) + 1


_PLAIN_MEMO_MAX = 50_000  # distinct short plain scalars remembered (values repeat across a repo's files)
_plain: dict[str, tuple[str, Any]] = {}  # plain scalar text -> (resolved tag, value); the values are immutable
_resolver: Any = yaml.resolver.Resolver()
_QUOTED = ("'", '"', "|", ">")


MAX_INT_BITS = 13_300  # about 4,000 decimal digits: Python refuses to print an int of more than 4,300


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` nests more than `levels` levels of lists and mappings (`levels` is at most MAX_DEPTH)."""
    if type(value) is list:
        children: Any = value
    elif type(value) is dict:
        children = value.values()
    else:
        return False
    return any(levels <= 0 or _deeper_than(child, levels - 1) for child in children)


def _budget_exceeded(line: int) -> YamlProblem:
    return YamlProblem("YAML_ALIAS_BUDGET",
                       f"YAML expands to more than {NODE_BUDGET} nodes (alias expansion or sheer size); refused", line)


class _Builder:
    """Builds plain data from the event stream. The hot path of every cold load (tens of thousands of files),
    so it takes each event once (`get_event`, never a peek and a get), and looks a line up from the mark
    directly unless the text has exotic line breaks."""

    def __init__(self, loader: Any, line: _Lines) -> None:
        self.get = loader.get_event
        self.line = line
        self.exotic = line.exotic
        self.doc = Document(data=None)
        self.value_lines = self.doc.value_lines
        self.key_lines = self.doc.key_lines
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.nodes = 0

    def build(self) -> Document:
        get = self.get
        get()  # StreamStart
        if type(get()) is yaml.StreamEndEvent:  # otherwise that was DocumentStart
            self.doc.data = None
            return self.doc
        data, _ = self._node(get(), (), 0)
        get()  # DocumentEnd
        ev = get()
        if type(ev) is not yaml.StreamEndEvent:
            raise YamlProblem("YAML_PARSE", "file holds more than one YAML document", self.line(ev.start_mark))
        self.doc.data = data
        return self.doc

    def _node(self, ev: Any, path: Path_, depth: int) -> tuple[Any, int]:
        """Build the node that `ev` starts; returns (value, node count including expansions)."""
        line = self.line(ev.start_mark) if self.exotic else ev.start_mark.line + 1
        kind = type(ev)
        if depth > MAX_DEPTH:
            raise YamlProblem("YAML_DEPTH", f"YAML nests deeper than {MAX_DEPTH} levels", line)
        if kind is yaml.AliasEvent:
            if ev.anchor not in self.anchors:
                raise YamlProblem("YAML_PARSE", f"alias *{ev.anchor} is used before its anchor", line)
            value, size = self.anchors[ev.anchor]
            self.nodes += size
            if self.nodes > NODE_BUDGET:
                raise _budget_exceeded(line)
            if _deeper_than(value, MAX_DEPTH - depth):  # an alias nests its anchor's node here
                raise YamlProblem("YAML_DEPTH", f"YAML nests deeper than {MAX_DEPTH} levels (through alias "
                                  f"*{ev.anchor})", line)
            self.value_lines[path] = line
            return value, size
        self.nodes += 1
        if self.nodes > NODE_BUDGET:
            raise _budget_exceeded(line)
        self.value_lines[path] = line
        if kind is yaml.ScalarEvent:
            value = self._scalar(ev, line)
            size = 1
        elif kind is yaml.SequenceStartEvent:
            self._check_tag(ev.tag, "tag:yaml.org,2002:seq", line)
            value, size = self._sequence(path, depth)
        elif kind is yaml.MappingStartEvent:
            self._check_tag(ev.tag, "tag:yaml.org,2002:map", line)
            value, size = self._mapping(path, depth)
        else:  # pragma: no cover - the parser guarantees node events here
            raise YamlProblem("YAML_PARSE", f"unexpected YAML event {kind.__name__}", line)
        if ev.anchor is not None:
            self.anchors[ev.anchor] = (value, size)
        return value, size

    @staticmethod
    def _check_tag(tag: str | None, allowed: str, line: int) -> None:
        if tag not in (None, "!", allowed):
            raise YamlProblem("YAML_TAG", f"YAML tag {tag} is not allowed (only plain data is accepted)", line)

    @staticmethod
    def _scalar(ev: Any, line: int) -> Any:
        tag = ev.tag
        if tag is None or tag == "!":
            if tag == "!" or ev.style in _QUOTED:
                return ev.value
            known = _plain.get(ev.value)
            if known is not None:
                return known[1]
            tag = _resolver.resolve(yaml.ScalarNode, ev.value, (True, False))
        if tag not in _SCALAR_TAGS:
            raise YamlProblem("YAML_TAG", f"YAML tag {tag} is not allowed (only plain data is accepted)", line)
        if tag in (_STR, "tag:yaml.org,2002:timestamp"):
            value = ev.value
        else:
            node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
            try:
                value = _constructor.construct_object(node, deep=True)
            except (ValueError, yaml.YAMLError):
                kind = tag.rsplit(":", 1)[-1]
                raise YamlProblem("YAML_PARSE", f"cannot read scalar {shown_value(ev.value)} as {kind}", line) from None
            finally:
                _constructor.constructed_objects.clear()  # it remembers every node it built, one per scalar, forever
            if type(value) is int and value.bit_length() > MAX_INT_BITS:  # 0x.../0o.../0b...: no digit limit to parse
                raise YamlProblem("YAML_PARSE", f"integer {shown_value(ev.value)} is too large (over 4,000 digits)",
                                  line)
        if ev.tag is None and len(ev.value) <= 64:  # a plain scalar's tag and value depend on its text alone
            if len(_plain) >= _PLAIN_MEMO_MAX:
                _plain.clear()
            _plain[ev.value] = (tag, value)
        return value

    def _sequence(self, path: Path_, depth: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        size = 1
        get = self.get
        while True:
            ev = get()
            if type(ev) is yaml.SequenceEndEvent:
                return items, size
            value, n = self._node(ev, (*path, len(items)), depth + 1)
            items.append(value)
            size += n

    def _mapping(self, path: Path_, depth: int) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        size = 1
        get = self.get
        key_lines = self.key_lines
        while True:
            kev = get()
            kind = type(kev)
            if kind is yaml.MappingEndEvent:
                return result, size
            kline = self.line(kev.start_mark) if self.exotic else kev.start_mark.line + 1
            if kind is not yaml.ScalarEvent:
                raise YamlProblem("YAML_PARSE", "mapping keys must be plain scalars", kline)
            if kev.tag not in (None, "!", _STR):
                raise YamlProblem("YAML_TAG", f"YAML tag {kev.tag} is not allowed on a key", kline)
            key = kev.value
            if key == "<<" and kev.style not in ("'", '"'):
                raise YamlProblem("YAML_MERGE", "YAML merge keys (<<) are not supported; write the keys out", kline)
            if key in result:
                first = key_lines.get((*path, key))
                where = f" (first at line {first})" if first else ""
                raise YamlProblem("YAML_DUPLICATE_KEY", f"duplicate key {key!r}{where}", kline)
            self.nodes += 1
            if self.nodes > NODE_BUDGET:
                raise _budget_exceeded(kline)
            child = (*path, key)
            key_lines[child] = kline
            value, n = self._node(get(), child, depth + 1)
            result[key] = value
            size += n + 1
