"""Search QA (AutoCoA, seed 004): multi-hop questions answered with a local BM25 search engine.

`search:<corpus>` reads `stratarl/data/search/<corpus>/`: `corpus.jsonl` (one document per line:
id, title, text) and `train/dev/test.jsonl` (question, answers, the entities to search for and their
document ids). The shipped corpus `synthkb` is a fictional knowledge base made by
`scripts/gen_search_corpus.py`. A task's seed is the question's index in its split.

The action contract (what `step` accepts; the runner hands it the text inside `<action>...</action>`):
- `search: QUERY` -> the top-k BM25 documents (param `k`) are the observation;
- `answer: TEXT` -> ends the episode with reward 1 if TEXT is right, else 0;
- text that still holds tags (a caller passing the model's raw output) is read like the runner
  reads it: the first `<action>` block, else the first `<answer>` block, which counts as `answer:`;
- anything else is a format violation: the observation says so, `action_valid` is False, and the
  step still counts. Without a valid answer by `max_steps` actions the episode ends with reward 0.

An answer is right when, after normalisation (lower case, punctuation and the articles a/an/the
removed), it equals a gold answer or contains at least 70% of its words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..agent.parse import extract
from ..errors import UnknownNameError, UserError
from ..types import Task, read_jsonl
from .base import EnvSpec, Param, sanitize_action
from .registry import DYNAMIC, SPLITS

DATA = Path(__file__).resolve().parents[1] / "data" / "search"
MATCH_FRACTION = (7, 10)
"""An answer holding at least 7/10 of a gold answer's words counts as right."""

_COMMAND = re.compile(r"^\s*(search|answer)\s*:\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)
_NOT_WORD = re.compile(r"[^\w\s]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class Doc:
    """One document of a corpus."""

    id: str
    """Document id, e.g. `city-012`."""
    title: str
    """Its title (the entity's name)."""
    text: str
    """Its body."""


@dataclass(frozen=True)
class Question:
    """One question of a split."""

    id: str
    """`<split>-<nnnn>`."""
    question: str
    """The question shown to the agent."""
    answers: tuple[str, ...]
    """Gold answer first, then accepted aliases."""
    hops: int
    """Relations between the named entity and the answer."""
    entities: tuple[str, ...]
    """Names to search for, one per hop, in order (the gold searches)."""
    supporting: tuple[str, ...]
    """Ids of the documents those searches must find."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    doc: Doc
    """The document."""
    score: float
    """Its BM25 score for the query (> 0)."""


@dataclass(frozen=True)
class Command:
    """An action read as search-QA syntax."""

    kind: str
    """`search`, `answer`, or `invalid`."""
    arg: str
    """The query, the answer, or why the action was not understood."""


# --- corpora and the index --------------------------------------------------------------------------

def corpora() -> list[str]:
    """Names of the corpora shipped under `stratarl/data/search/`."""
    return sorted(p.name for p in DATA.iterdir() if (p / "corpus.jsonl").is_file()) if DATA.is_dir() else []


@cache
def load_docs(corpus: str) -> tuple[Doc, ...]:
    return tuple(Doc(d["id"], d["title"], d["text"]) for d in read_jsonl(DATA / corpus / "corpus.jsonl"))


@cache
def load_questions(corpus: str, split: str) -> tuple[Question, ...]:
    fields = ("id", "question", "answers", "hops", "entities", "supporting")
    rows = read_jsonl(DATA / corpus / f"{split}.jsonl")
    return tuple(Question(**{k: tuple(r[k]) if isinstance(r[k], list) else r[k] for k in fields})
                 for r in rows)


def tokenize(texts: list[str]) -> list[list[str]]:
    """bm25s's own tokenizer: lower case, words of 2+ characters, English stop words removed."""
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


@dataclass(frozen=True)
class Index:
    """A BM25 index over one corpus."""

    docs: tuple[Doc, ...]
    """The documents, in index order."""
    retriever: Any
    """The `bm25s.BM25` object."""


@cache
def bm25_index(corpus: str) -> Index:
    """The corpus's index, built once per process (~0.1 s for synthkb)."""
    try:
        import bm25s
    except ImportError:
        raise UserError(f"search:{corpus} needs the bm25s package: pip install 'stratarl[search]'") from None
    docs = load_docs(corpus)
    retriever = bm25s.BM25()
    retriever.index(tokenize([f"{d.title}. {d.text}" for d in docs]), show_progress=False)
    return Index(docs, retriever)


def search(index: Index, query: str, k: int) -> list[Hit]:
    """The top `k` documents with a positive score, best first; ties keep corpus order."""
    known = [t for t in tokenize([query])[0] if t in index.retriever.vocab_dict and t]
    if not known:
        return []
    scores = index.retriever.get_scores(known)
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:k]
    return [Hit(index.docs[i], float(scores[i])) for i in order if scores[i] > 0]


def shorten(text: str, n: int = 100) -> str:
    """`text` cut to `n` characters for echoing in an observation."""
    return text if len(text) <= n else text[:n - 3] + "..."


def format_hits(query: str, hits: list[Hit]) -> str:
    query = shorten(query)
    if not hits:
        return f'No documents match "{query}".'
    lines = [f"[{i}] {h.doc.title}: {h.doc.text}" for i, h in enumerate(hits, 1)]
    return f'Search results for "{query}":\n' + "\n".join(lines)


# --- actions and rewards ----------------------------------------------------------------------------

def read_command(action: str) -> Command:
    """`search: Q` / `answer: A`, or raw model text with `<action>` / `<answer>` tags (module docstring)."""
    tagged = [a for a in extract(action, "action") if a.strip()]
    answers = [a for a in extract(action, "answer") if a.strip()]
    text = tagged[0] if tagged else (f"answer: {answers[0]}" if answers else action)
    m = _COMMAND.match(text)
    if m is None:
        shown = shorten(" ".join(text.split()), 60)
        return Command("invalid", f"'{shown}' is neither 'search: QUERY' nor 'answer: ANSWER'")
    kind, arg = m.group(1).lower(), " ".join(m.group(2).split())
    if not arg:
        return Command("invalid", f"'{kind}:' needs text after the colon")
    return Command(kind, arg)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed (SQuAD-style)."""
    return " ".join(_ARTICLES.sub(" ", _NOT_WORD.sub(" ", text.lower())).split())


def answer_matches(answer: str, gold: str) -> bool:
    """Exact match after normalisation, or >= 70% of the gold words present in the answer."""
    got, want = normalize_answer(answer), normalize_answer(gold)
    if not want:
        return False
    if got == want:
        return True
    words = set(got.split())
    hits = sum(w in words for w in want.split())
    num, den = MATCH_FRACTION
    return hits * den >= num * len(want.split())


def answer_reward(answer: str, golds: tuple[str, ...] | list[str]) -> float:
    """1.0 when the answer matches any gold answer or alias, else 0.0."""
    return 1.0 if any(answer_matches(answer, g) for g in golds) else 0.0


# --- the environment --------------------------------------------------------------------------------

def instructions(question: Question, k: int, max_steps: int) -> str:
    return (f"Question: {question.question}\n"
            f"Find the answer with a search engine over a small encyclopedia. Search with "
            f"'search: QUERY' (shows the top {k} documents); give the final answer with 'answer: ANSWER'. "
            f"You have {max_steps} actions.")


@dataclass
class _Episode:
    question: Question
    moves: int = 0
    done: bool = False
    won: bool = False


class SearchEnv:
    """One search-QA episode at a time over a shipped corpus (see module docstring)."""

    def __init__(self, corpus: str, params: dict[str, Any]):
        self.corpus, self.k, self.max_steps = corpus, int(params["k"]), int(params["max_steps"])
        self._index = bm25_index(corpus)
        self._ep: _Episode | None = None

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        if task.env != f"search:{self.corpus}":
            raise ValueError(f"this env runs search:{self.corpus}, not {task.env}")
        self._ep = _Episode(load_questions(self.corpus, task.split)[task.seed])
        return instructions(self._ep.question, self.k, self.max_steps), self._info(True)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        ep = self._ep
        if ep is None:
            raise RuntimeError("step() before reset()")
        if ep.done:
            return "The episode is over.", 0.0, True, self._info(False)
        ep.moves += 1
        cmd = read_command(sanitize_action(action))  # the query is echoed; keep it valid UTF-8
        if cmd.kind == "answer":
            ep.done, ep.won = True, answer_reward(cmd.arg, ep.question.answers) == 1.0
            verdict = "correct" if ep.won else "wrong"
            obs = f'You answered "{shorten(cmd.arg)}". The answer is {verdict}.'
            return obs, float(ep.won), True, self._info(True)
        if cmd.kind == "search":
            obs = format_hits(cmd.arg, search(self._index, cmd.arg, self.k))
        else:
            obs = f"Invalid action: {cmd.arg}. Nothing happened."
        if ep.moves >= self.max_steps:
            ep.done = True
            obs += "\nNo actions left: the episode ends without an answer."
        return obs, 0.0, ep.done, self._info(cmd.kind != "invalid")

    def expert_actions(self, task: Task) -> list[str]:
        """One search per entity on the question's chain, then the gold answer."""
        q = load_questions(self.corpus, task.split)[task.seed]
        return [*(f"search: {name}" for name in q.entities), f"answer: {q.answers[0]}"]

    def close(self) -> None:
        self._ep = None

    def _info(self, valid: bool) -> dict[str, Any]:
        ep = self._ep
        assert ep is not None
        won = float(ep.won)
        return {"won": ep.won, "score": won, "outcome": won, "task_description": ep.question.question,
                "moves": ep.moves, "action_valid": valid}


# --- registration -----------------------------------------------------------------------------------

PARAMS = {
    "k": Param(int, 3, "documents shown per search", 1, 20),
    "max_steps": Param(int, 6, "actions before the episode ends without an answer (reward 0)", 1, 100),
}


def spec(corpus: str) -> EnvSpec:
    return EnvSpec(
        id=f"search:{corpus}", family="search",
        description=f"Multi-hop questions answered by BM25 search over the '{corpus}' corpus (AutoCoA).",
        factory=lambda p: SearchEnv(corpus, p), params=PARAMS,
        split_sizes=lambda p: {s: len(load_questions(corpus, s)) for s in SPLITS},
        seeds=lambda split, p: list(range(len(load_questions(corpus, split)))),
        has_expert=True, max_steps=6, outcome="won",
    )


def specs() -> list[EnvSpec]:
    return [spec(c) for c in corpora()]


def resolve(name: str) -> EnvSpec:
    """`search:<name>` for a shipped corpus; any other name is an error listing the shipped ones."""
    if name not in corpora():
        raise UnknownNameError("environment", f"search:{name}", [f"search:{c}" for c in corpora()])
    return spec(name)


DYNAMIC["search"] = resolve
