"""Generate the `search:synthkb` data: a fictional knowledge base written out as one short document
per entity, and multi-hop questions over it (the search-QA setting of AutoCoA, seed 004).

    python scripts/gen_search_corpus.py                 # rewrites src/stratarl/data/search/synthkb/
    python scripts/gen_search_corpus.py --out /tmp/kb   # somewhere else (the tests compare both)

The knowledge base has countries, cities, rivers, universities, people and companies, linked by
single-valued relations (a person is born in one city, a company has one founder, ...). A question
follows a chain of 2 or 3 relations from a named start entity, e.g. "In which country is the city
where the founder of Zarvex Corp was born?"; answering it takes one search per entity on the chain.

Every name is built from syllables, so no pretrained model knows an answer before it searches.
The output depends on SEED alone: every random draw goes through `random.Random.random()`, the one
method whose sequence Python keeps the same across versions (`choice` and `shuffle` may change).
Splits have disjoint start entities: no dev or test question starts from an entity that a train
question starts from (intermediate entities, e.g. countries, are shared).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from stratarl.envs.search import Doc  # the corpus line the env reads

SEED = 20250513
OUT = Path(__file__).resolve().parents[1] / "src" / "stratarl" / "data" / "search" / "synthkb"
SPLIT_SIZES = {"train": 400, "dev": 100, "test": 200}
COUNTS = {"country": 16, "river": 24, "university": 32, "person": 160, "company": 80}
CITIES_PER_COUNTRY = 6
VALUE = "value"
"""Target kind of a relation whose object is a plain value (a year, an occupation), not an entity."""

T = TypeVar("T")


@dataclass(frozen=True)
class Relation:
    """A single-valued relation and how questions phrase it."""

    name: str
    """Key in `Entity.facts`."""
    source: str
    """Kind of the subject."""
    target: str
    """Kind of the object, or VALUE."""
    phrase: str
    """Noun phrase for the object, `{x}` the subject ('' for values, which end a chain)."""
    ask: str
    """Question asking for the object, `{x}` the subject."""


RELATIONS = (
    Relation("born_in", "person", "city", "the city where {x} was born", "In which city was {x} born?"),
    Relation("studied_at", "person", "university", "the university that {x} attended",
             "Which university did {x} attend?"),
    Relation("occupation", "person", VALUE, "", "What is the occupation of {x}?"),
    Relation("birth_year", "person", VALUE, "", "In which year was {x} born?"),
    Relation("founded_by", "company", "person", "the founder of {x}", "Who founded {x}?"),
    Relation("headquarters", "company", "city", "the city where {x} has its headquarters",
             "In which city does {x} have its headquarters?"),
    Relation("industry", "company", VALUE, "", "In which industry does {x} work?"),
    Relation("founding_year", "company", VALUE, "", "In which year was {x} founded?"),
    Relation("country", "city", "country", "the country of {x}", "In which country is {x}?"),
    Relation("river", "city", "river", "the river that flows through {x}", "Which river flows through {x}?"),
    Relation("capital", "country", "city", "the capital of {x}", "What is the capital of {x}?"),
    Relation("currency", "country", VALUE, "", "What is the currency of {x}?"),
    Relation("campus", "university", "city", "the city that is home to {x}", "In which city is {x}?"),
    Relation("opened", "university", VALUE, "", "In which year did {x} open?"),
    Relation("source", "river", "country", "the country where {x} rises", "In which country does {x} rise?"),
    Relation("length_km", "river", VALUE, "", "How many kilometres long is {x}?"),
)
BY_NAME = {r.name: r for r in RELATIONS}

OCCUPATIONS = ("architect", "painter", "engineer", "physician", "composer", "botanist", "sculptor",
               "astronomer", "poet", "cartographer", "chemist", "lawyer", "historian", "shipwright")
INDUSTRIES = ("shipbuilding", "textiles", "mining", "software", "brewing", "glassmaking", "publishing",
              "aviation", "pharmaceuticals", "railways", "insurance", "ceramics")
COMPANY_SUFFIXES = ("Corp", "Works", "Group", "Industries", "Holdings", "Company")

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr",
          "tr", "th", "sk", "vl", "zh", "kv")
NUCLEI = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "y")
CODAS = ("", "", "n", "r", "l", "s", "th", "x", "m", "sk", "nd")


@dataclass
class Entity:
    """One thing in the knowledge base; it gets one document."""

    kind: str
    """country, city, river, university, person or company."""
    id: str
    """Document id, e.g. `city-012`."""
    name: str
    """Its (fictional) name, the document's title."""
    facts: dict[str, str] = field(default_factory=dict)
    """Relation name -> entity id, or the value itself for VALUE relations."""


@dataclass(frozen=True)
class Question:
    """One split line."""

    id: str
    """`<split>-<nnnn>`."""
    question: str
    """The question text."""
    answers: list[str]
    """Gold answer first, then accepted aliases (e.g. `Zarvex` for `Zarvex Corp`)."""
    hops: int
    """Relations on the chain (2 or 3)."""
    relations: list[str]
    """Relation names, from the start entity outwards."""
    entities: list[str]
    """Names of the start and intermediate entities: one search each."""
    supporting: list[str]
    """Document ids of those entities, in the same order."""


# --- randomness that stays the same across Python versions ------------------------------------------

def pick(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[int(rng.random() * len(seq))]


def randint(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def shuffled(rng: random.Random, seq: Sequence[T]) -> list[T]:
    """Fisher-Yates over `rng.random()`."""
    out = list(seq)
    for i in range(len(out) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        out[i], out[j] = out[j], out[i]
    return out


# --- names ------------------------------------------------------------------------------------------

def make_word(rng: random.Random, syllables: int) -> str:
    parts = [pick(rng, ONSETS) + pick(rng, NUCLEI) for _ in range(syllables)]
    return ("".join(parts) + pick(rng, CODAS)).capitalize()


def word_source(rng: random.Random):
    """Endless unique syllable words of 2-3 syllables and at least 5 letters."""
    seen: set[str] = set()
    while True:
        w = make_word(rng, 3 if rng.random() < 0.6 else 2)
        if len(w) >= 5 and w.lower() not in seen:
            seen.add(w.lower())
            yield w


# --- the knowledge base -----------------------------------------------------------------------------

def build_kb(rng: random.Random) -> list[Entity]:
    """Entities in a fixed order, countries first; ids are `<kind>-<nnn>` per kind."""
    words = word_source(rng)
    countries = [Entity("country", f"country-{i:03d}", next(words)) for i in range(COUNTS["country"])]
    cities = [Entity("city", f"city-{i:03d}", next(words))
              for i in range(len(countries) * CITIES_PER_COUNTRY)]
    rivers = [Entity("river", f"river-{i:03d}", f"{next(words)} River") for i in range(COUNTS["river"])]
    unis = [Entity("university", f"university-{i:03d}", f"{next(words)} University")
            for i in range(COUNTS["university"])]
    people = [Entity("person", f"person-{i:03d}", f"{next(words)} {next(words)}")
              for i in range(COUNTS["person"])]
    companies = [Entity("company", f"company-{i:03d}", f"{next(words)} {pick(rng, COMPANY_SUFFIXES)}")
                 for i in range(COUNTS["company"])]
    for i, country in enumerate(countries):
        country.facts["capital"] = cities[i * CITIES_PER_COUNTRY].id
        country.facts["currency"] = next(words).lower()
    for i, city in enumerate(cities):
        city.facts["country"] = countries[i // CITIES_PER_COUNTRY].id
        city.facts["river"] = pick(rng, rivers).id
    for river in rivers:
        river.facts["source"] = pick(rng, countries).id
        river.facts["length_km"] = str(randint(rng, 120, 2900))
    for uni in unis:
        uni.facts["campus"] = pick(rng, cities).id
        uni.facts["opened"] = str(randint(rng, 1350, 1950))
    for person in people:
        person.facts["born_in"] = pick(rng, cities).id
        person.facts["studied_at"] = pick(rng, unis).id
        person.facts["occupation"] = pick(rng, OCCUPATIONS)
        person.facts["birth_year"] = str(randint(rng, 1780, 1960))
    for company in companies:
        founder = pick(rng, people)
        company.facts["founded_by"] = founder.id
        company.facts["headquarters"] = pick(rng, cities).id
        company.facts["industry"] = pick(rng, INDUSTRIES)
        company.facts["founding_year"] = str(int(founder.facts["birth_year"]) + randint(rng, 22, 55))
    return [*countries, *cities, *rivers, *unis, *people, *companies]


def a(noun: str) -> str:
    """`noun` with its indefinite article."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def write_doc(e: Entity, kb: dict[str, Entity]) -> Doc:
    """The entity's facts as a few plain sentences; only its own facts, so each fact has one home."""
    f, name = e.facts, e.name
    ref = {k: kb[v].name for k, v in f.items() if v in kb}
    if e.kind == "country":
        text = (f"{name} is a country. Its capital is {ref['capital']} "
                f"and its currency is the {f['currency']}.")
    elif e.kind == "city":
        country = kb[f["country"]]
        is_capital = country.facts["capital"] == e.id
        role = f"the capital of {country.name}" if is_capital else f"a city in {country.name}"
        text = f"{name} is {role}. The {ref['river']} flows through {name}."
    elif e.kind == "river":
        text = f"The {name} is a river that rises in {ref['source']}. It is {f['length_km']} km long."
    elif e.kind == "university":
        text = f"{name} is a university in {ref['campus']}. It opened in {f['opened']}."
    elif e.kind == "person":
        surname = name.split()[-1]
        text = (f"{name} is {a(f['occupation'])} who was born in {ref['born_in']} in {f['birth_year']}. "
                f"{surname} studied at {ref['studied_at']}.")
    else:
        text = (f"{name} is {a(f['industry'])} company founded in {f['founding_year']} "
                f"by {ref['founded_by']}. "
                f"Its headquarters are in {ref['headquarters']}.")
    return Doc(id=e.id, title=name, text=text)


# --- questions --------------------------------------------------------------------------------------

def chains(start: Entity, kb: dict[str, Entity], hops: int) -> list[list[str]]:
    """Every relation path of `hops` relations from `start` that visits no entity twice."""
    paths: list[list[str]] = []

    def walk(entity: Entity, path: list[str], visited: list[str]) -> None:
        for rel in RELATIONS:
            if rel.source != entity.kind:
                continue
            obj = entity.facts[rel.name]
            if len(path) + 1 == hops:
                if obj not in visited:
                    paths.append([*path, rel.name])
            elif rel.target != VALUE and obj not in visited:
                walk(kb[obj], [*path, rel.name], [*visited, obj])

    walk(start, [], [start.id])
    return paths


def aliases(e: Entity) -> list[str]:
    """Shorter names a reader would accept: `Zarvex` for `Zarvex Corp`, `Velar` for `Velar River`."""
    if e.kind in ("river", "university", "company"):
        return [e.name, e.name.rsplit(" ", 1)[0]]
    return [e.name]


def make_question(qid: str, start: Entity, path: list[str], kb: dict[str, Entity]) -> Question:
    chain, subject = [start], f"the {start.name}" if start.kind == "river" else start.name
    for name in path[:-1]:
        chain.append(kb[chain[-1].facts[name]])
        subject = BY_NAME[name].phrase.format(x=subject)
    last = BY_NAME[path[-1]]
    obj = chain[-1].facts[last.name]
    text = last.ask.format(x=subject)
    return Question(id=qid, question=text[0].upper() + text[1:],
                    answers=[obj] if last.target == VALUE else aliases(kb[obj]),
                    hops=len(path), relations=path, entities=[e.name for e in chain],
                    supporting=[e.id for e in chain])


def split_starts(rng: random.Random, entities: list[Entity]) -> dict[str, list[Entity]]:
    """Start entities dealt to the splits in proportion to their sizes."""
    total = sum(SPLIT_SIZES.values())
    order, out, at = shuffled(rng, entities), {}, 0
    for split, size in SPLIT_SIZES.items():
        n = round(len(entities) * size / total)
        out[split] = order[at:at + n] if split != "test" else order[at:]
        at += n
    return out


def draw_questions(rng: random.Random, split: str, starts: list[Entity],
                   kb: dict[str, Entity]) -> list[Question]:
    """SPLIT_SIZES[split] questions, half 2-hop and half 3-hop, spread round-robin over the starts."""
    pools = {e.id: {h: shuffled(rng, chains(e, kb, h)) for h in (2, 3)} for e in starts}
    want = {2: SPLIT_SIZES[split] // 2, 3: SPLIT_SIZES[split] - SPLIT_SIZES[split] // 2}
    picked: list[tuple[Entity, list[str]]] = []
    while any(want.values()):
        progressed = False
        for e in shuffled(rng, starts):
            for hops in sorted(want, key=lambda h: -want[h]):
                if want[hops] and pools[e.id][hops]:
                    picked.append((e, pools[e.id][hops].pop()))
                    want[hops] -= 1
                    progressed = True
                    break
            if not any(want.values()):
                break
        if not progressed:
            raise RuntimeError(f"not enough distinct questions for the {split} split")
    return [make_question(f"{split}-{i:04d}", e, path, kb) for i, (e, path) in enumerate(picked)]


def generate(seed: int = SEED) -> tuple[list[Doc], dict[str, list[Question]]]:
    rng = random.Random(seed)
    entities = build_kb(rng)
    kb = {e.id: e for e in entities}
    docs = [write_doc(e, kb) for e in entities]
    starts = split_starts(rng, entities)
    return docs, {split: draw_questions(rng, split, starts[split], kb) for split in SPLIT_SIZES}


def write_jsonl(path: Path, records: list) -> None:
    lines = [json.dumps(asdict(r), ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"output directory (default {OUT})")
    ap.add_argument("--seed", type=int, default=SEED,
                    help="generator seed (the shipped data uses the default)")
    args = ap.parse_args(argv)
    docs, splits = generate(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "corpus.jsonl", docs)
    for split, questions in splits.items():
        write_jsonl(args.out / f"{split}.jsonl", questions)
    size = sum(p.stat().st_size for p in args.out.glob("*.jsonl"))
    sizes = ", ".join(f"{s} {len(q)}" for s, q in splits.items())
    print(f"wrote {len(docs)} documents and {sizes} questions to {args.out} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
