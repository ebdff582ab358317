"""Load a rules file: bytes -> YAML (with line numbers) -> `RulesFile` -> `RuleSet`.

Every mistake a user can make in a rules file becomes a `Problem` (`FILE:LINE: key.path:
message`) and all of them are raised together as one `RulesError`; nothing else escapes for
a user's mistake. The steps, each of which can stop with problems:

1. read: missing, a directory, unreadable, binary (NUL bytes) or not UTF-8;
2. parse: ruamel.yaml round-trip (YAML 1.2), which keeps each key's line; syntax errors and
   duplicate keys are reported at their line;
3. convert: ruamel's types become plain Python and a `loc -> line` index is built on the way;
4. validate: pydantic (`model.RulesFile`); each error's `loc` is looked up in the index and
   its wording made human.
"""

from __future__ import annotations

import codecs
import functools
import json
import os
import re
import warnings
from collections.abc import Sequence
from importlib import resources
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from shadowproxy.errors import Problem, RulesError
from shadowproxy.rules.messages import Loc, message, show
from shadowproxy.rules.model import PROBLEM, SAMPLE_TAGS, RulesFile
from shadowproxy.rules.ruleset import RuleSet

__all__ = ["check_rules", "default_ruleset", "load_rules", "load_rules_text", "rules_json_schema"]

SCHEMA_ID = "https://shadowproxy.dev/schemas/rules/1"
DEFAULT_SOURCE = "<embedded default rules>"
MAX_NODES = 100_000  # aliases can make a small file huge ("billion laughs"); no real rules file is near

# a YAML 1.2 float with an exponent; YAML 1.1 (`%YAML 1.1`) resolves `1e-9` to a string
_EXP_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+")
_KEY_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# every character str.splitlines() breaks at, shown escaped instead
_ESCAPE = {c: repr(chr(c))[1:-1] for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}


class _Stop(Exception):
    """Loading cannot go on; `problems` says why."""

    def __init__(self, *problems: Problem) -> None:
        self.problems = list(problems)


def load_rules(path: str | os.PathLike[str]) -> RuleSet:
    """Load and validate a rules file. Raises RulesError listing every problem found."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise RulesError([Problem(source, 1, "", "no such file")]) from None
    except IsADirectoryError:
        raise RulesError([Problem(source, 1, "", "is a directory, not a rules file")]) from None
    except PermissionError:
        raise RulesError([Problem(source, 1, "", "cannot read: permission denied")]) from None
    except OSError as e:
        raise RulesError([Problem(source, 1, "", f"cannot read: {e.strerror or e}")]) from None
    return load_rules_text(data, source)


def load_rules_text(text: str | bytes, source: str) -> RuleSet:
    """Load and validate rules from a string; `source` names it in messages."""
    try:
        return _Loader(source).load(text)
    except _Stop as stop:
        raise RulesError(stop.problems) from None


def check_rules(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem found in a rules file, in line order; [] when it is fine."""
    try:
        load_rules(path)
    except RulesError as e:
        return e.problems
    return []


@functools.cache
def default_ruleset() -> RuleSet:
    """The rules used when no file is given: shadowproxy/rules/default.yaml, embedded."""
    text = resources.files("shadowproxy.rules").joinpath("default.yaml").read_bytes()
    return load_rules_text(text, DEFAULT_SOURCE)


def rules_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a rules file."""
    schema = RulesFile.model_json_schema()
    head = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "shadowproxy rules file, version 1",
    }
    return {**head, **{k: v for k, v in schema.items() if k != "title"}}


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Loc, int] = {(): 1}  # loc -> 1-based line of its key or list item
        self.items: set[Loc] = set()  # locs that are list items, shown as [i]
        self.nodes = 0
        self.active: set[int] = set()  # ids of containers being converted, to catch alias cycles

    def problem(self, line: int, loc: Loc, message: str) -> Problem:
        # one problem, one line: a value quoted in a message may hold a line break
        return Problem(self.source, line, self.key_path(loc).translate(_ESCAPE), message.translate(_ESCAPE))

    def load(self, text: str | bytes) -> RuleSet:
        doc = self.parse(self.decode(text))
        if doc is None:
            raise _Stop(self.problem(1, (), "file is empty: expected a mapping starting with 'version: 1'"))
        if isinstance(doc, CommentedMap) and doc.lc.line is not None:
            self.lines[()] = doc.lc.line + 1
        data = self.plain(doc, (), self.lines[()])
        if not isinstance(data, dict):
            msg = f"the top level must be a mapping starting with 'version: 1', got {show(data)}"
            raise _Stop(self.problem(1, (), msg))
        try:
            rules = RulesFile.model_validate(data)
        except ValidationError as e:
            problems = [self.translate(err) for err in e.errors(include_url=False)]
            raise _Stop(*sorted(problems, key=lambda p: p.line)) from None
        return RuleSet(rules, self.source)

    # -- 1. read ----------------------------------------------------------------------------

    def decode(self, text: str | bytes) -> str:
        if isinstance(text, str):
            raw = text
        elif text.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise _Stop(self.problem(1, (), "encoded as UTF-16: a rules file is UTF-8 YAML"))
        else:
            nul = text.find(b"\0")
            if nul >= 0:
                line = text.count(b"\n", 0, nul) + 1
                raise _Stop(self.problem(line, (), "not a text file (NUL byte): a rules file is UTF-8 YAML"))
            try:
                raw = text.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                line = text.count(b"\n", 0, e.start) + 1
                msg = f"not UTF-8 (byte 0x{text[e.start]:02x}): a rules file is UTF-8 YAML"
                raise _Stop(self.problem(line, (), msg)) from None
        nul = raw.find("\0")
        if nul >= 0:
            line = raw.count("\n", 0, nul) + 1
            raise _Stop(self.problem(line, (), "not a text file (NUL character): a rules file is UTF-8 YAML"))
        return raw

    # -- 2. parse ---------------------------------------------------------------------------

    def parse(self, text: str) -> Any:
        yaml = YAML(typ="rt")
        yaml.preserve_quotes = True  # quoted scalars keep a str subclass: "1e-9" stays a string
        try:
            # ruamel warns about things that are not errors here (e.g. a reused anchor)
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                return yaml.load(text)
        except DuplicateKeyError as e:
            raise _Stop(*self.duplicates(text, e)) from None
        except MarkedYAMLError as e:
            raise _Stop(self.syntax_problem(e)) from None
        except ReaderError as e:
            line = text.count("\n", 0, e.position) + 1
            msg = f"YAML: unacceptable character {e.character!r} ({e.reason})"
            raise _Stop(self.problem(line, (), msg)) from None
        except YAMLError as e:
            raise _Stop(self.problem(1, (), f"YAML: {e}")) from None
        except RecursionError:
            raise _Stop(self.problem(1, (), "YAML: nested too deeply")) from None
        except Exception as e:  # ruamel's own slips on odd input are still the input's fault
            raise _Stop(self.problem(1, (), f"YAML: cannot parse: {type(e).__name__}: {e}")) from None

    def syntax_problem(self, e: MarkedYAMLError) -> Problem:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = e.problem or e.context or "syntax error"
        if e.context and e.problem:
            where = ""
            if e.context_mark is not None and e.context_mark.line + 1 != line:
                where = f" at line {e.context_mark.line + 1}"
            if e.problem.startswith("but "):  # "expected a single document", "but found another"
                what = f"{e.context}{where}, {e.problem}"
            else:
                what += f" ({e.context}{where})"
        if "<block end>" in what or "<block mapping start>" in what:
            what += "; check the indentation"
        return self.problem(line, (), f"YAML syntax error: {what}")

    def duplicates(self, text: str, e: DuplicateKeyError) -> list[Problem]:
        """Each duplicate key with its key path (the constructor only says where the first one is)."""
        found: list[Problem] = []

        def walk(node: Node, loc: Loc) -> None:
            if isinstance(node, MappingNode):
                seen: dict[str, int] = {}
                for k, v in node.value:
                    key = k.value if isinstance(k, ScalarNode) else None
                    here = (*loc, key) if isinstance(key, str) else loc
                    if isinstance(key, str) and key != "<<":
                        line = k.start_mark.line + 1
                        if key in seen:
                            msg = f"duplicate key {key!r} (first at line {seen[key]})"
                            found.append(Problem(self.source, line, self.key_path(here), msg))
                        else:
                            seen[key] = line
                    walk(v, here)
            elif isinstance(node, SequenceNode):
                for i, v in enumerate(node.value):
                    self.items.add((*loc, i))
                    walk(v, (*loc, i))

        try:
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                root = YAML(typ="rt").compose(text)
            if root is not None:
                walk(root, ())
        except (YAMLError, RecursionError):
            pass
        if not found:  # keys equal only once resolved (e.g. `1` and `0x1`): say what ruamel said
            mark = e.problem_mark
            found.append(self.problem(mark.line + 1 if mark else 1, (), f"duplicate key: {e.problem}"))
        return found

    # -- 3. convert -------------------------------------------------------------------------

    def plain(self, node: Any, loc: Loc, line: int) -> Any:
        """`node` as plain Python (dict, list, str, int, float, bool, None, date), indexing lines."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Stop(self.problem(line, loc, f"too large: more than {MAX_NODES} values (aliases?)"))
        if isinstance(node, dict | list):
            tag = getattr(getattr(node, "tag", None), "value", None)
            if tag is not None:  # `x: !foo [1]`: ruamel keeps the tag on the collection
                raise _Stop(self.problem(line, loc, f"unsupported YAML tag {tag!r}"))
            if id(node) in self.active:
                raise _Stop(self.problem(line, loc, "YAML alias refers to itself"))
            self.active.add(id(node))
            try:
                if isinstance(node, dict):
                    return self.plain_map(node, loc, line)
                return self.plain_seq(node, loc, line)
            except RecursionError:
                raise _Stop(self.problem(line, loc, "nested too deeply")) from None
            finally:
                self.active.discard(id(node))
        if isinstance(node, TaggedScalar):
            tag = node.tag.value if node.tag is not None else "?"
            raise _Stop(self.problem(line, loc, f"unsupported YAML tag {tag!r}"))
        if isinstance(node, bool) or node is None:
            return node if node is None else bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, str):
            if type(node) is str and _EXP_FLOAT.fullmatch(node):  # unquoted, so a number
                return float(node)
            return str(node)
        return node  # dates, sets, binary: pydantic says they are the wrong type

    def plain_map(self, node: dict[Any, Any], loc: Loc, line: int) -> dict[Any, Any]:
        lc = (node.lc.data if isinstance(node, CommentedMap) else None) or {}
        out: dict[Any, Any] = {}
        for k, v in node.items():
            key = _plain_key(k)
            at = lc.get(k)
            here = (*loc, key)
            self.lines[here] = at[0] + 1 if at else line
            out[key] = self.plain(v, here, self.lines[here])
        return out

    def plain_seq(self, node: list[Any], loc: Loc, line: int) -> list[Any]:
        lc = (node.lc.data if isinstance(node, CommentedSeq) else None) or {}
        out: list[Any] = []
        for i, v in enumerate(node):
            at = lc.get(i)
            here = (*loc, i)
            self.items.add(here)
            self.lines[here] = at[0] + 1 if at else line
            out.append(self.plain(v, here, self.lines[here]))
        return out

    # -- 4. validate ------------------------------------------------------------------------

    def translate(self, err: Any) -> Problem:
        """One pydantic error as a Problem: the line of its key, its key path, plain words."""
        loc: Loc = tuple(err["loc"])
        ctx: dict[str, Any] = err.get("ctx") or {}
        if loc and loc[-1] == "[key]":  # a bad mapping key: the key is what is wrong
            loc = loc[:-1]
        if "sample" in loc[:-1]:  # a tagged union's tag is pydantic's, not a key of the file
            i = loc.index("sample") + 1
            if loc[i] in SAMPLE_TAGS:
                loc = loc[:i] + loc[i + 1 :]
        if err["type"] == PROBLEM:
            loc = (*loc, *ctx.get("at", ()))
        return self.problem(self.line_of(loc), loc, message(err, loc))

    def line_of(self, loc: Loc) -> int:
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return 1

    def key_path(self, loc: Loc) -> str:
        out = ""
        for n, part in enumerate(loc):
            if loc[: n + 1] in self.items:
                out += f"[{part}]"
            elif isinstance(part, str) and _KEY_WORD.fullmatch(part):
                out += ("." if out else "") + part
            else:
                out += f"[{json.dumps(str(part))}]"
        return out


def _plain_key(key: Any) -> Any:
    if key is None or isinstance(key, bool):
        return key
    if isinstance(key, int):
        return int(key)
    if isinstance(key, float):
        return float(key)
    if isinstance(key, str):
        return str(key)
    if isinstance(key, Sequence):  # a complex key, `? [a, b]`
        return tuple(_plain_key(k) for k in key)
    return str(key)
