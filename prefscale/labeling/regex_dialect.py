"""Polars' (Rust) regex dialect translated to Python's `re`, so a pattern LF votes the same row by row as vectorised."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:  # pragma: no cover
    pass

# --- polars' regex dialect in Python's `re` -----------------------------------------------------------------
#
# polars runs patterns with Rust's `regex` crate. Handing the same pattern to Python's `re` would not give
# the same votes:
# * Unicode `\w`, `\d`, `\s` (and so `\b`) cover different code points: Rust's `\w` includes combining marks
#   and connector punctuation, Python's includes numerals such as '²' and '½';
# * `(?i)` is Unicode simple case folding in Rust; Python also folds 'i' with 'ı' and 'İ';
# * without `(?m)`, Rust's `$` matches only at the very end, Python's also before a final newline;
# * Rust switches flags anywhere (`a(?i)b`) and nests repetitions (`a**`); Python rejects both;
# * `count_matches` drops an empty match that touches the previous match; `re.finditer` reports it.
# So `python_regex` translates the Rust pattern into a flag-free Python pattern of the same meaning: every
# flag is resolved while parsing, and every character class (`[...]`, `\w`, `\p{..}`, `.`, a literal under
# `(?i)`) is written out as the exact set of code points that polars' own engine matches, found once per
# class by asking polars about every code point. `_rust_count` counts matches the way the Rust iterator does.


@functools.cache
def _all_chars() -> pl.Series:
    """One string holding every Unicode scalar value (surrogates excluded), in order."""
    cps = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype("<u4")
    return pl.Series([cps.tobytes().decode("utf-32-le")])


_ASCII = np.arange(0x80)
_ASCII_CHARS = pl.Series([chr(c) for c in range(0x80)])


@functools.cache
def _case_sensitive() -> pl.Series:
    """The characters that some other character folds to or from (Rust's own Unicode tables)."""
    cps = _rust_class(r"[\p{Changes_When_Casemapped}\p{Changes_When_Casefolded}]", "", ascii_only=False)
    return pl.Series([chr(c) for c in cps.tolist()])


def _hex(c: int) -> str:
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}"


def _py_class(cps: np.ndarray) -> str:
    """A Python atom matching exactly the code points `cps` (sorted, unique), one character wide."""
    if len(cps) == 0:
        return "(?:(?!))"
    if len(cps) == 1:
        return re.escape(chr(int(cps[0])))
    bmp, astral = cps[cps <= 0xFFFF], cps[cps > 0xFFFF]
    if len(bmp) and len(astral):
        # `re` tests a class with only BMP members against one bitmap, but walks a class that also holds
        # astral ranges range by range (Unicode `\w` has hundreds). The astral part is tried only for an
        # astral character.
        return f"(?:{_py_ranges(bmp)}|(?![\\x00-\\uffff]){_py_ranges(astral)})"
    return _py_ranges(cps)


def _py_ranges(cps: np.ndarray) -> str:
    breaks = np.flatnonzero(np.diff(cps) != 1)
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks, len(cps) - 1]
    spans = ((int(cps[a]), int(cps[b])) for a, b in zip(starts.tolist(), ends.tolist(), strict=True))
    return "[" + "".join(_hex(lo) if lo == hi else f"{_hex(lo)}-{_hex(hi)}" for lo, hi in spans) + "]"


@functools.cache
def _rust_class(atom: str, flags: str, ascii_only: bool) -> np.ndarray:
    """The code points the Rust one-character `atom` (a class or an escape) matches under inline `flags`:
    all of them, or (`ascii_only`) the ASCII ones."""
    if ascii_only:
        return _ASCII[_ASCII_CHARS.str.contains(f"{flags}^(?:{atom})$").to_numpy()]
    # One pass of polars' engine over a string of every character: what it deletes is the class.
    left = _all_chars().str.replace_all(f"{flags}(?:{atom})", "").item()
    member = np.ones(0x110000, dtype=bool)
    member[0xD800:0xE000] = False
    member[np.frombuffer(left.encode("utf-32-le"), dtype="<u4")] = False
    return np.flatnonzero(member)


@functools.cache
def _rust_literal(c: str, flags: str, ascii_only: bool) -> np.ndarray:
    """The code points the literal character `c` matches under inline `flags` (which hold `i`)."""
    if ascii_only or "-u" in flags:  # a small universe, or ASCII-only folding: ask polars directly
        return _rust_class(f"\\x{{{ord(c):x}}}", flags, ascii_only)
    cased = _case_sensitive()
    if not cased.str.contains(f"^\\x{{{ord(c):x}}}$").any():
        return np.array([ord(c)])
    mates = cased.filter(cased.str.contains(f"(?i)^\\x{{{ord(c):x}}}$"))
    return np.array(sorted({ord(m) for m in mates} | {ord(c)}))


@dataclass(frozen=True)
class _Flags:
    i: bool = False
    m: bool = False
    s: bool = False
    U: bool = False
    u: bool = True
    x: bool = False
    R: bool = False

    def updated(self, spec: str) -> _Flags:
        on, changes = True, {}
        for ch in spec:
            if ch == "-":
                on = False
            elif ch in "imsUuxR":
                changes[ch] = on
            else:
                raise ValueError(f"unsupported regex flag {ch!r}")
        return replace(self, **changes)

    @property
    def class_flags(self) -> str:
        """The inline flags that change what a character class matches."""
        on = "".join(f for f in "ix" if getattr(self, f))
        return f"(?{on}{'' if self.u else '-u'})" if on or not self.u else ""


def _word_assertion(kind: str, word: str) -> str:
    w = word
    if w == "ascii" and kind == "b":
        # Compiled with re.ASCII, `re`'s own `\b` is Rust's on ASCII text (and faster). Not `\B`: before
        # Python 3.14 it never matches the empty string.
        return "(?:\\b)"
    if w == "ascii":
        w = "[0-9A-Za-z_]"
    return {
        "b": f"(?:(?<={w})(?!{w})|(?<!{w})(?={w}))",
        "B": f"(?:(?<={w})(?={w})|(?<!{w})(?!{w}))",
        "start": f"(?:(?<!{w})(?={w}))",
        "end": f"(?:(?<={w})(?!{w}))",
        "start-half": f"(?:(?<!{w}))",
        "end-half": f"(?:(?!{w}))",
    }[kind]


_ESCAPED_CHARS = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_HEX_ESCAPE = re.compile(r"\{([0-9A-Fa-f]{1,8})\}")
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}")
_SPECIAL_WORD_BOUNDARY = re.compile(r"\{(start|end|start-half|end-half)\}")


class _Translator:
    """Recursive-descent translation of one Rust regex into a flag-free Python `re` pattern."""

    def __init__(self, pattern: str, ascii_text: bool) -> None:
        self.p, self.i, self.ascii_text = pattern, 0, ascii_text

    def _chars(self, cps: np.ndarray) -> str:
        """The atom for a set of code points; for an ASCII-only text, only the ASCII ones can occur."""
        return _py_class(cps[cps < 0x80] if self.ascii_text else cps)

    def run(self) -> str:
        out = self._alternation(_Flags())
        if self.i != len(self.p):
            raise self._error("unbalanced ')'")
        return out

    def _error(self, what: str) -> ValueError:
        return ValueError(f"cannot translate regex {self.p!r} at offset {self.i}: {what}")

    def _skip_ignored(self, flags: _Flags) -> None:
        """In `(?x)` mode, skip whitespace (Unicode White_Space, as Rust) and `#` comments."""
        while flags.x and self.i < len(self.p):
            c = self.p[self.i]
            if c == "#":
                end = self.p.find("\n", self.i)
                self.i = len(self.p) if end < 0 else end + 1
            elif c.isspace() and c not in "\x1c\x1d\x1e\x1f":
                self.i += 1
            else:
                return

    def _alternation(self, flags: _Flags) -> str:
        branches: list[str] = []
        items: list[tuple[str, bool]] = []  # (Python atom, already repeated)
        while True:
            self._skip_ignored(flags)
            if self.i >= len(self.p) or self.p[self.i] == ")":
                break
            c = self.p[self.i]
            if c == "|":
                branches.append("".join(t for t, _ in items))
                items = []
                self.i += 1
            elif c == "(":
                group = self._group(flags)
                if isinstance(group, _Flags):  # `(?flags)`: the rest of this group, later branches included
                    flags = group
                else:
                    items.append((group, False))
            elif c in "*+?{":
                if not items:
                    raise self._error("repetition operator missing expression")
                rep = self._repetition(flags)
                atom, repeated = items[-1]
                items[-1] = ((f"(?:{atom})" if repeated else atom) + rep, True)  # Rust nests `a**`
            else:
                items.append((self._atom(flags), False))
        branches.append("".join(t for t, _ in items))
        return "|".join(branches)

    def _group(self, flags: _Flags) -> str | _Flags:
        p = self.p
        self.i += 1
        inner = flags
        if p.startswith("?", self.i):
            self.i += 1
            if p.startswith(("P<", "<"), self.i):  # named capture: captures do not change what matches
                self.i = p.index(">", self.i) + 1
            else:
                m = re.compile(r"[A-Za-z-]*").match(p, self.i)
                assert m is not None
                self.i = m.end()
                inner = flags.updated(m.group())
                if p.startswith(")", self.i):
                    self.i += 1
                    return inner
                if not p.startswith(":", self.i):
                    raise self._error("unsupported group")
                self.i += 1
        body = self._alternation(inner)
        if not p.startswith(")", self.i):
            raise self._error("unclosed group")
        self.i += 1
        return f"(?:{body})"

    def _repetition(self, flags: _Flags) -> str:
        p = self.p
        if p[self.i] == "{":
            m = _REPEAT.match(p, self.i)
            if m is None:
                raise self._error("bad counted repetition")
            lo, comma, hi = m.groups()
            rep = f"{{{int(lo)}{',' if comma else ''}{int(hi) if hi else ''}}}"
            self.i = m.end()
        else:
            rep = p[self.i]
            self.i += 1
        lazy = p.startswith("?", self.i)
        if lazy:
            self.i += 1
        return rep + ("?" if lazy != flags.U else "")  # `(?U)` swaps greedy and lazy

    def _atom(self, flags: _Flags) -> str:
        c = self.p[self.i]
        if c == "[":
            return self._chars(_rust_class(self._class_text(), flags.class_flags, self.ascii_text))
        if c == "\\":
            return self._escape(flags)
        self.i += 1
        if c == ".":
            return "(?s:.)" if flags.s else "[^\\n\\r]" if flags.R else "[^\\n]"
        if c == "^":
            if not flags.m:
                return "(?:\\A)"
            return "(?:\\A|(?<=\\n)|(?<=\\r)(?!\\n))" if flags.R else "(?:\\A|(?<=\\n))"
        if c == "$":
            if not flags.m:
                return "(?:\\Z)"  # Rust's `$` never matches before a final newline
            return "(?:\\Z|(?=\\r)|(?<!\\r)(?=\\n))" if flags.R else "(?:\\Z|(?=\\n))"
        return self._literal(c, flags)

    def _literal(self, c: str, flags: _Flags) -> str:
        return self._chars(_rust_literal(c, flags.class_flags, self.ascii_text)) if flags.i else re.escape(c)

    def _word(self, flags: _Flags) -> str:
        # Rust's Unicode `\w` and its ASCII `\w` agree on ASCII characters.
        return (
            "ascii" if self.ascii_text else self._chars(_rust_class("\\w", "" if flags.u else "(?-u)", False))
        )

    def _escape(self, flags: _Flags) -> str:
        p, start = self.p, self.i
        if start + 1 >= len(p):
            raise self._error("trailing backslash")
        c = p[start + 1]
        self.i = start + 2
        if c in "dDsSwW":
            return self._chars(_rust_class(p[start : self.i], flags.class_flags, self.ascii_text))
        if c in "pP":
            self.i = p.index("}", self.i) + 1 if p.startswith("{", self.i) else self.i + 1
            return self._chars(_rust_class(p[start : self.i], flags.class_flags, self.ascii_text))
        if c in "bB<>":
            kind = {"<": "start", ">": "end"}.get(c, c)
            if c == "b" and (m := _SPECIAL_WORD_BOUNDARY.match(p, self.i)):
                kind, self.i = m.group(1), m.end()
            return _word_assertion(kind, self._word(flags))
        if c == "A":
            return "(?:\\A)"
        if c == "z":
            return "(?:\\Z)"
        if c in _ESCAPED_CHARS:
            return self._literal(_ESCAPED_CHARS[c], flags)
        if c in "xuU":
            m = _HEX_ESCAPE.match(p, self.i)
            if m is None:
                width = {"x": 2, "u": 4, "U": 8}[c]
                m = re.compile(f"([0-9A-Fa-f]{{{width}}})").match(p, self.i)
            if m is None:
                raise self._error("bad hex escape")
            self.i = m.end()
            return self._literal(chr(int(m.group(1), 16)), flags)
        if c.isascii() and not c.isalnum():  # an escaped punctuation (or space) is the character itself
            return self._literal(c, flags)
        raise self._error(f"unsupported escape \\{c}")

    def _class_text(self) -> str:
        """The text of the bracket class at the cursor (nested classes and `[:posix:]` included)."""
        p, start = self.p, self.i

        def after_open(i: int) -> int:  # `^` and a leading `]` belong to the class
            i += 1 if p.startswith("^", i) else 0
            return i + 1 if p.startswith("]", i) else i

        i, depth = after_open(start + 1), 1
        while i < len(p):
            c = p[i]
            if c == "\\":
                i += 2
            elif c == "[" and (m := _POSIX_CLASS.match(p, i)):
                i = m.end()
            elif c == "[":
                i, depth = after_open(i + 1), depth + 1
            elif c == "]":
                i, depth = i + 1, depth - 1
                if depth == 0:
                    self.i = i
                    return p[start:i]
            else:
                i += 1
        raise self._error("unclosed class")


def python_regex(pattern: str, text: str | None = None) -> re.Pattern[str]:
    """Python's `re` compilation of the polars (Rust `regex`) `pattern`: it matches exactly what polars does.

    Given the `text` it will search, and if that text is ASCII, the translation is specialised to ASCII text
    (small classes, `re`'s own `\\b`): the same matches, several times faster.
    """
    return _python_regex(pattern, text is not None and text.isascii())


@functools.cache
def _python_regex(pattern: str, ascii_text: bool) -> re.Pattern[str]:
    return re.compile(_Translator(pattern, ascii_text).run(), re.ASCII if ascii_text else 0)


def _rust_count(rx: re.Pattern[str], text: str) -> int:
    """Non-overlapping matches of `rx` in `text`, counted as polars' `count_matches` counts them."""
    found = rx.findall(text)  # translated patterns have no capture groups: one str per match
    if "" not in found:
        return len(found)  # no empty match: Python's and Rust's iteration agree
    # Rust's iterator skips an empty match that ends where the previous match ended, then searches from
    # the next character; Python's reports it (and may then match non-empty text at the same spot).
    n, pos, last_end = 0, 0, -1
    while pos <= len(text):
        m = rx.search(text, pos)
        if m is None:
            break
        start, end = m.span()
        if start == end:
            pos = end + 1
            if end == last_end:
                continue
        else:
            pos = end
        n, last_end = n + 1, end
    return n
