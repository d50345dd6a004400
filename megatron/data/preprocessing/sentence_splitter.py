"""Rule-based English sentence splitter for ``--split-sentences`` (BERT-style sentence-level data).

Megatron uses NLTK punkt, which needs a model download at run time; this splitter needs nothing. It ends a
sentence at ``. ! ? …`` (plus closing quotes/brackets) followed by whitespace and a word that does not start in
lower case, and at blank lines. It does not split after titles and other abbreviations (``Mr.``, ``Dr.``,
``e.g.``), initials (``J. R. R.``) or inside decimals and URLs, which carry no whitespace after the dot.
"""

from __future__ import annotations

import re

__all__ = ["split_sentences", "NEVER_FINAL_ABBREVIATIONS", "MAYBE_FINAL_ABBREVIATIONS"]

# Abbreviations that (almost) never end a sentence: a following capitalised word continues it ("Dr. Watson").
NEVER_FINAL_ABBREVIATIONS = frozenset(
    """Mr Mrs Ms Mx Dr Prof Rev Hon St Mt Ft Gen Col Capt Cpt Lt Sgt Cmdr Adm Gov Sen Rep Pres Supt Fr Br Messrs
    Mme Mlle Msgr vs v e.g E.g i.e I.e cf Cf viz Viz Fig Figs fig figs Eq Eqs eq Ch ch Sec sec Vol vol No Nos
    pp Pp p Art art approx Approx ca c Ref ref Dept Univ Assn Ave Blvd Rd""".split()
)
# Abbreviations that often end a sentence too: split after them only before a capitalised word or a quote.
MAYBE_FINAL_ABBREVIATIONS = frozenset(
    """etc Inc Ltd Co Corp Jr Sr Bros a.m p.m A.M P.M al Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec
    Mon Tue Tues Wed Thu Thurs Fri Sat Sun""".split()
)

_OPENERS = "\"'“‘«([{"
_CLOSERS = "\"'”’»)]}"
# A candidate boundary: terminator run, closing punctuation, whitespace; or a blank line (paragraph break).
_BOUNDARY = re.compile(
    rf"(?P<term>[.!?…]+)(?P<close>[{re.escape(_CLOSERS)}]*)(?P<ws>\s+)|(?P<para>\n[^\S\n]*\n\s*)"
)
_LAST_WORD = re.compile(r"(\S+)$")
_DOTTED_ACRONYM = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")  # U.S, U.S.A, Ph.D-like without the last dot


def _word_before(text: str, end: int) -> str:
    """The whitespace-delimited word ending at ``end`` (exclusive), without leading opening punctuation."""
    m = _LAST_WORD.search(text, max(0, end - 64), end)
    return m.group(1).lstrip(_OPENERS) if m else ""


def _is_boundary(text: str, m: re.Match) -> bool:
    """Decide whether the candidate match ``m`` ends a sentence."""
    if m.group("para") is not None or "\n\n" in m.group("ws").replace("\r", "").replace(" ", ""):
        return True
    nxt = text[m.end()] if m.end() < len(text) else ""
    if not nxt:
        return True
    if nxt.islower():  # "e.g. this", '"Stop!" he said' continue the sentence
        return False
    if m.group("term") != ".":
        return True  # "!", "?", "..." before a capitalised word, digit or quote
    word = _word_before(text, m.start("term"))
    if word in NEVER_FINAL_ABBREVIATIONS or (len(word) == 1 and word.isupper()):
        return False  # titles and initials: "Dr. Watson", "J. R. R. Tolkien"
    if word in MAYBE_FINAL_ABBREVIATIONS or _DOTTED_ACRONYM.match(word):
        return not nxt.isdigit()  # "Jan. 5" continues; "Acme Inc. The firm" splits
    return True


def split_sentences(text: str, keep_newlines: bool = False) -> list[str]:
    """Split ``text`` into sentences.

    Args:
        text: one document.
        keep_newlines: keep the whitespace (newlines included) that follows each sentence attached to it, so
            ``"".join(split_sentences(t, True)) == t`` for any ``t`` with non-whitespace content (Megatron's
            ``--keep-newlines``); otherwise sentences are stripped.

    Returns:
        Non-empty sentences in order; ``[]`` for blank text.
    """
    if not text.strip():
        return []
    pieces: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        if m.end() < len(text) and _is_boundary(text, m):
            pieces.append(text[start : m.end()])
            start = m.end()
    pieces.append(text[start:])
    if keep_newlines:
        # Leading blank text of a piece (only possible for the first) stays attached to keep the join exact.
        return [p for p in pieces if p]
    return [s for s in (p.strip() for p in pieces) if s]
