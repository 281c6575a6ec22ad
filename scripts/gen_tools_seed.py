"""Generate the `tools:seed` dataset: six fictional tool servers (domains) whose tools are small,
deterministic Python functions over embedded data, and questions whose sub-questions chain across
those tools (ASTRA's QA-decomposition environments, seed 001, written by rules instead of an LLM).

    python scripts/gen_tools_seed.py                  # rewrites src/stratarl/data/tools/seed/
    python scripts/gen_tools_seed.py --out /tmp/tools # somewhere else (the tests compare both)

Domains: `geo` (countries, cities, distances), `weather` (forecasts, air quality, temperature
conversion), `finance` (tickers, quotes, exchange rates, companies), `library` (books, publishers,
branches), `travel` (airports, flights, hotels) and `food` (recipes, nutrition, restaurants).
Every entity is fictional and named from syllables, so no pretrained model knows an answer before
it calls a tool. Each of 13 question templates (e.g. "What is the forecast high for friday in the
capital of Velmaria, in degrees Fahrenheit?" -> get_country_profile, get_forecast,
convert_temperature) is instantiated 6 times: instances 0-3 go to train, 4-5 to test, interleaved
so that the first 13 items of a split cover every template.

Gold answers are not written by hand: each sub-question's gold call is executed (the tool's own
source, run in a fresh namespace of this process) and the sub-answer is read from its result; an
item is kept only if the sub-answer appears, normalised, in the printed result (the env's solved
rule). The output depends on SEED alone: every draw goes through `random.Random.random()`, whose
sequence Python keeps the same across versions.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stratarl.envs.tools import solves  # the env's rule for a solved sub-question

SEED = 20250611
OUT = Path(__file__).resolve().parents[1] / "src" / "stratarl" / "data" / "tools" / "seed"
INSTANCES, TRAIN_PER_TEMPLATE = 6, 4
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DATES = ("2031-04-01", "2031-04-02", "2031-04-03", "2031-04-04", "2031-04-07")
FLIGHT_DATES = DATES[:3]
BRANCHES = ("central", "harbor", "hillside", "riverside")
CUISINES = ("grill", "noodle", "seafood", "vegetarian")
CONDITIONS = ("sunny", "cloudy", "rain", "showers", "fog", "windy", "snow")
STATUSES = ("on time", "delayed", "boarding", "cancelled", "departed")
SYLLABLES = ("vel", "mar", "tor", "ka", "ri", "zan", "dru", "osk", "lem", "pha", "quin", "bor", "sal", "ten",
             "ix", "ula", "gra", "fen", "mo", "tha", "rel", "vas", "cor", "dim", "lun", "pra", "sko", "nar",
             "bel", "kit", "som", "yar", "ost", "wen", "fal", "gud")
ADJECTIVES = ("Silent", "Amber", "Hollow", "Last", "Crimson", "Northern", "Quiet", "Broken", "Golden", "Distant",
              "Pale", "Iron")
NOUNS = ("Harbor", "Orchard", "Lantern", "Meridian", "Archive", "Tide", "Garden", "Compass", "Winter", "Bridge",
         "Mirror", "Kingdom")

T = TypeVar("T")


class Draw:
    """Random draws made only through `random.Random.random()` (stable across Python versions)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        """Uniform in [lo, hi]."""
        return lo + int(self.rng.random() * (hi - lo + 1))

    def real(self, lo: float, hi: float, digits: int) -> float:
        return round(lo + self.rng.random() * (hi - lo), digits)

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.rng.random() * len(seq))]

    def shuffled(self, seq: Sequence[T]) -> list[T]:
        out = list(seq)
        for i in range(len(out) - 1, 0, -1):
            j = int(self.rng.random() * (i + 1))
            out[i], out[j] = out[j], out[i]
        return out

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        return self.shuffled(seq)[:k]


# --- the world --------------------------------------------------------------------------------------

@dataclass
class World:
    """Every table the tools embed; keys are display names, rows plain JSON values."""

    used: set[str] = field(default_factory=set)
    """Every name given out so far (names are unique across kinds)."""
    countries: dict[str, dict] = field(default_factory=dict)
    cities: dict[str, dict] = field(default_factory=dict)
    forecast: dict[str, dict] = field(default_factory=dict)
    aqi: dict[str, int] = field(default_factory=dict)
    uv: dict[str, int] = field(default_factory=dict)
    currencies: dict[str, float] = field(default_factory=dict)
    companies: dict[str, dict] = field(default_factory=dict)
    quotes: dict[str, dict] = field(default_factory=dict)
    authors: dict[str, dict] = field(default_factory=dict)
    publishers: dict[str, dict] = field(default_factory=dict)
    books: dict[str, dict] = field(default_factory=dict)
    copies: dict[str, dict] = field(default_factory=dict)
    airports: dict[str, dict] = field(default_factory=dict)
    flights: dict[str, list] = field(default_factory=dict)
    status: dict[str, dict] = field(default_factory=dict)
    hotels: dict[str, dict] = field(default_factory=dict)
    dishes: dict[str, dict] = field(default_factory=dict)
    nutrition: dict[str, dict] = field(default_factory=dict)
    restaurants: dict[str, dict] = field(default_factory=dict)


def new_name(w: World, d: Draw, parts: int, suffix: str = "") -> str:
    while True:
        name = "".join(d.pick(SYLLABLES) for _ in range(parts)).capitalize() + suffix
        if name.lower() not in w.used and len(name) <= 14:
            w.used.add(name.lower())
            return name


def make_geo(w: World, d: Draw) -> None:
    for _ in range(8):
        country = new_name(w, d, 2, d.pick(("ia", "land", "ora", "mark")))
        currency = new_name(w, d, 2).lower()
        w.currencies[currency] = d.real(0.05, 3.0, 3)
        names = [new_name(w, d, d.pick((2, 2, 3))) for _ in range(4)]
        lat0, lon0 = d.real(-50, 60, 1), d.real(-150, 150, 1)
        for name in names:
            w.cities[name] = {"country": country, "population": d.integer(20, 2400) * 1000,
                              "elevation_m": d.integer(0, 2200), "timezone": f"UTC{d.integer(-10, 12):+d}",
                              "lat": round(lat0 + d.real(-6, 6, 2), 2), "lon": round(lon0 + d.real(-8, 8, 2), 2)}
        w.countries[country] = {"capital": names[0], "currency": currency,
                                "population_millions": d.real(0.4, 60, 1)}
    for city in w.cities:
        highs = [d.integer(-8, 36) for _ in DAYS]
        w.forecast[city] = {day: [d.pick(CONDITIONS), hi, hi - d.integer(3, 11)]
                            for day, hi in zip(DAYS, highs, strict=True)}
        w.aqi[city], w.uv[city] = d.integer(8, 240), d.integer(0, 11)


def person(w: World, d: Draw) -> str:
    return f"{new_name(w, d, 2)} {new_name(w, d, 2)}"


def make_finance(w: World, d: Draw) -> None:
    cities, tickers = list(w.cities), set()
    for _ in range(16):
        company = new_name(w, d, 2, d.pick((" Corp", " Group", " Labs", " Works", " Holdings")))
        while (ticker := "".join(d.pick("ABCDEFGHKLMNPRSTVXZ") for _ in range(4))) in tickers:
            pass
        tickers.add(ticker)
        country = d.pick(list(w.countries))
        w.companies[company] = {"ticker": ticker, "exchange": f"{country} Exchange", "ceo": person(w, d),
                                "founded": d.integer(1890, 2024), "headquarters": d.pick(cities)}
        w.quotes[ticker] = {"currency": w.countries[country]["currency"],
                            "days": {day: [d.real(4, 900, 2), d.integer(1, 900) * 1000] for day in DATES}}


def make_library(w: World, d: Draw) -> None:
    for _ in range(6):
        w.publishers[new_name(w, d, 2, d.pick((" Press", " House", " Books")))] = {
            "city": d.pick(list(w.cities)), "founded": d.integer(1800, 2010)}
    titles = iter(d.sample([f"The {a} {n}" for a in ADJECTIVES for n in NOUNS], 36))
    for _ in range(12):
        author = person(w, d)
        born = d.integer(1900, 1990)
        w.authors[author] = {"born": born, "nationality": d.pick(list(w.countries))}
        for year in d.sample(range(born + 22, born + 70), 3):
            title = next(titles)
            isbn = "978" + "".join(str(d.integer(0, 9)) for _ in range(10))
            w.books[title] = {"author": author, "year": year, "publisher": d.pick(list(w.publishers)),
                              "pages": d.integer(90, 820), "isbn": isbn}
            w.copies[isbn] = {branch: d.integer(0, 7) for branch in BRANCHES}


def make_travel(w: World, d: Draw) -> None:
    codes: set[str] = set()
    for city in w.cities:
        while (code := "".join(d.pick("ABCDEFGHJKLMNOPRSTUVWXYZ") for _ in range(3))) in codes:
            pass
        codes.add(code)
        w.airports[city] = {"code": code, "airport": f"{city} International"}
        currency = w.countries[w.cities[city]["country"]]["currency"]
        w.hotels[city] = {"hotel": f"Hotel {new_name(w, d, 2)}", "nightly_rate": d.integer(40, 400), "currency": currency}
    cities, numbers = list(w.cities), set()
    for a, b in [(a, b) for a in d.sample(cities, 12) for b in d.sample(cities, 3) if a != b]:
        for date in FLIGHT_DATES:
            route, prices = [], d.sample(range(60, 900), 3)
            for price in prices[:d.integer(2, 3)]:
                while (number := f"{d.pick(('VX', 'KR', 'OS', 'ML'))}{d.integer(100, 999)}") in numbers:
                    pass
                numbers.add(number)
                route.append({"flight": number, "departs": f"{d.integer(5, 22):02d}:{d.pick(('00', '15', '30', '45'))}",
                              "price": price})
                w.status[number] = {"status": d.pick(STATUSES), "gate": f"{d.pick('ABCD')}{d.integer(1, 30)}"}
            w.flights[f"{w.airports[a]['code']}-{w.airports[b]['code']}-{date}"] = sorted(
                route, key=lambda f: f["departs"])


def make_food(w: World, d: Draw) -> None:
    ingredients = [new_name(w, d, 2, d.pick((" root", " berry", " grain", " leaf", " bean"))).lower()
                   for _ in range(20)]
    for name in ingredients:
        w.nutrition[name] = {"kcal_per_100g": d.integer(12, 620), "protein_g": d.real(0, 30, 1)}
    for _ in range(12):
        dish = new_name(w, d, 2, d.pick((" stew", " pie", " salad", " soup", " noodles")))
        grams = d.sample(range(20, 600, 5), d.integer(3, 5))
        w.dishes[dish] = {"cuisine": d.pick(CUISINES), "servings": d.integer(2, 6), "minutes": d.integer(10, 180),
                          "ingredients": dict(zip(d.sample(ingredients, len(grams)), grams, strict=True))}
    for city in w.cities:
        w.restaurants[city] = {c: [f"{new_name(w, d, 2)} {c.capitalize()}", d.real(2.5, 5.0, 1)] for c in CUISINES}


def make_world(seed: int) -> World:
    w, d = World(), Draw(seed)
    for part in (make_geo, make_finance, make_library, make_travel, make_food):
        part(w, d)
    return w


# --- tools ------------------------------------------------------------------------------------------

FIND = '''def _find(table, key, what):
    """The row of `key` (case and spacing do not matter), or a ValueError naming what is unknown."""
    wanted = " ".join(str(key).split()).lower()
    for name in table:
        if name.lower() == wanted:
            return name, table[name]
    raise ValueError(f"unknown {what}: {key!r}")
'''


@dataclass(frozen=True)
class ToolDef:
    """A tool before it is written out: its schema, its data and the body that reads the data."""

    name: str
    domain: str
    description: str
    params: dict[str, dict]
    """Parameter name -> JSON schema (type, description, optional enum); all are required."""
    data: Callable[[World], Any]
    """The table embedded as `_DATA` (None for a pure computation)."""
    body: str
    """Source of the function; it may use `_DATA` and `_find`."""


def _p(kind: str, doc: str, enum: Sequence[str] | None = None) -> dict:
    return {"type": kind, "description": doc, **({"enum": list(enum)} if enum else {})}


def _sorted(table: dict) -> dict:
    return {k: table[k] for k in sorted(table)}


TOOLS = (
    ToolDef("get_country_profile", "geo", "Look up a country: its capital city, currency and population.",
            {"country": _p("string", "Country name")}, lambda w: _sorted(w.countries), '''
def get_country_profile(country):
    name, row = _find(_DATA, country, "country")
    return {"country": name, **row}
'''),
    ToolDef("get_city_profile", "geo", "Look up a city: the country it is in, population, elevation and time zone.",
            {"city": _p("string", "City name")},
            lambda w: _sorted({c: {k: v for k, v in r.items() if k not in ("lat", "lon")} for c, r in w.cities.items()}),
            '''
def get_city_profile(city):
    name, row = _find(_DATA, city, "city")
    return {"city": name, **row}
'''),
    ToolDef("get_distance", "geo", "Great-circle distance in kilometres between two cities.",
            {"from_city": _p("string", "Start city"), "to_city": _p("string", "End city")},
            lambda w: _sorted({c: [r["lat"], r["lon"]] for c, r in w.cities.items()}), '''
import math

def get_distance(from_city, to_city):
    a, (lat1, lon1) = _find(_DATA, from_city, "city")
    b, (lat2, lon2) = _find(_DATA, to_city, "city")
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return {"from_city": a, "to_city": b, "km": round(2 * 6371 * math.asin(math.sqrt(h)))}
'''),
    ToolDef("list_cities", "geo", "List the cities of a country in alphabetical order.",
            {"country": _p("string", "Country name")},
            lambda w: _sorted({c: sorted(x for x, r in w.cities.items() if r["country"] == c) for c in w.countries}),
            '''
def list_cities(country):
    name, cities = _find(_DATA, country, "country")
    return {"country": name, "cities": cities}
'''),
    ToolDef("get_forecast", "weather", "Weather forecast of a city for a day of the coming week: condition, "
            "high and low temperature in degrees Celsius.",
            {"city": _p("string", "City name"), "day": _p("string", "Day of the week", DAYS)},
            lambda w: _sorted(w.forecast), '''
def get_forecast(city, day):
    name, week = _find(_DATA, city, "city")
    condition, high, low = _find(week, day, "day")[1]
    return {"city": name, "day": day.lower(), "condition": condition, "high_c": high, "low_c": low}
'''),
    ToolDef("get_air_quality", "weather", "Current air quality index (AQI) of a city and its category.",
            {"city": _p("string", "City name")}, lambda w: _sorted(w.aqi), '''
def get_air_quality(city):
    name, aqi = _find(_DATA, city, "city")
    category = "good" if aqi <= 50 else "moderate" if aqi <= 100 else "unhealthy" if aqi <= 200 else "hazardous"
    return {"city": name, "aqi": aqi, "category": category}
'''),
    ToolDef("get_uv_index", "weather", "Today's peak ultraviolet (UV) index of a city.",
            {"city": _p("string", "City name")}, lambda w: _sorted(w.uv), '''
def get_uv_index(city):
    name, uv = _find(_DATA, city, "city")
    return {"city": name, "uv_index": uv}
'''),
    ToolDef("convert_temperature", "weather", "Convert a temperature in degrees Celsius to Fahrenheit or Kelvin.",
            {"celsius": _p("number", "Temperature in degrees Celsius"),
             "unit": _p("string", "Target unit", ("fahrenheit", "kelvin"))}, lambda w: None, '''
def convert_temperature(celsius, unit):
    value = round(celsius * 9 / 5 + 32 if unit == "fahrenheit" else celsius + 273.15, 1)
    return {"celsius": celsius, "unit": unit, "value": int(value) if value == int(value) else value}
'''),
    ToolDef("lookup_ticker", "finance", "Find the stock ticker symbol and exchange of a listed company.",
            {"company": _p("string", "Company name")},
            lambda w: _sorted({c: {"ticker": r["ticker"], "exchange": r["exchange"]} for c, r in w.companies.items()}),
            '''
def lookup_ticker(company):
    name, row = _find(_DATA, company, "company")
    return {"company": name, **row}
'''),
    ToolDef("get_stock_quote", "finance", "Closing price, currency and traded volume of a stock on a trading date.",
            {"ticker": _p("string", "Ticker symbol"), "date": _p("string", "Trading date (YYYY-MM-DD)", DATES)},
            lambda w: _sorted(w.quotes), '''
def get_stock_quote(ticker, date):
    name, row = _find(_DATA, ticker, "ticker")
    close, volume = _find(row["days"], date, "trading date")[1]
    return {"ticker": name, "date": date, "close": close, "currency": row["currency"], "volume": volume}
'''),
    ToolDef("get_exchange_rate", "finance", "Exchange rate between two currencies: units of quote per unit of base.",
            {"base": _p("string", "Currency converted from"), "quote": _p("string", "Currency converted to")},
            lambda w: _sorted(w.currencies), '''
def get_exchange_rate(base, quote):
    b, vb = _find(_DATA, base, "currency")
    q, vq = _find(_DATA, quote, "currency")
    return {"base": b, "quote": q, "rate": round(vb / vq, 4)}
'''),
    ToolDef("convert_currency", "finance", "Convert an amount of money from one currency to another at today's rate.",
            {"amount": _p("number", "Amount in the base currency"), "base": _p("string", "Currency converted from"),
             "quote": _p("string", "Currency converted to")}, lambda w: _sorted(w.currencies), '''
def convert_currency(amount, base, quote):
    b, vb = _find(_DATA, base, "currency")
    q, vq = _find(_DATA, quote, "currency")
    rate = round(vb / vq, 4)
    converted = round(amount * rate, 2)
    converted = int(converted) if converted == int(converted) else converted
    return {"amount": amount, "base": b, "quote": q, "rate": rate, "converted": converted}
'''),
    ToolDef("get_company_profile", "finance", "Company profile: chief executive, founding year and headquarters city.",
            {"company": _p("string", "Company name")},
            lambda w: _sorted({c: {k: r[k] for k in ("ceo", "founded", "headquarters")} for c, r in w.companies.items()}),
            '''
def get_company_profile(company):
    name, row = _find(_DATA, company, "company")
    return {"company": name, **row}
'''),
    ToolDef("search_books", "library", "List the books of an author in the library catalogue, with their years.",
            {"author": _p("string", "Author's full name")},
            lambda w: _sorted({a: sorted([t, b["year"]] for t, b in w.books.items() if b["author"] == a)
                               for a in w.authors}), '''
def search_books(author):
    name, books = _find(_DATA, author, "author")
    return {"author": name, "books": [{"title": t, "year": y} for t, y in books]}
'''),
    ToolDef("get_book_details", "library", "Catalogue record of a book: author, year, publisher, pages and ISBN.",
            {"title": _p("string", "Book title")}, lambda w: _sorted(w.books), '''
def get_book_details(title):
    name, row = _find(_DATA, title, "title")
    return {"title": name, **row}
'''),
    ToolDef("get_publisher", "library", "Look up a publishing house: the city it is based in and its founding year.",
            {"name": _p("string", "Publisher name")}, lambda w: _sorted(w.publishers), '''
def get_publisher(name):
    found, row = _find(_DATA, name, "publisher")
    return {"publisher": found, **row}
'''),
    ToolDef("check_availability", "library", "Number of copies of a book (by ISBN) on the shelf at a library branch.",
            {"isbn": _p("string", "13-digit ISBN"), "branch": _p("string", "Library branch", BRANCHES)},
            lambda w: _sorted(w.copies), '''
def check_availability(isbn, branch):
    found, row = _find(_DATA, isbn.replace("-", ""), "ISBN")
    return {"isbn": found, "branch": branch, "copies": _find(row, branch, "branch")[1]}
'''),
    ToolDef("get_author_profile", "library", "Biographical record of an author: birth year and nationality.",
            {"author": _p("string", "Author's full name")}, lambda w: _sorted(w.authors), '''
def get_author_profile(author):
    name, row = _find(_DATA, author, "author")
    return {"author": name, **row}
'''),
    ToolDef("find_airport", "travel", "Find the airport of a city and its three-letter code.",
            {"city": _p("string", "City name")}, lambda w: _sorted(w.airports), '''
def find_airport(city):
    name, row = _find(_DATA, city, "city")
    return {"city": name, **row}
'''),
    ToolDef("search_flights", "travel", "Scheduled flights between two airports on a date, with departure times "
            "and fares.",
            {"origin": _p("string", "Three-letter airport code"), "destination": _p("string", "Three-letter airport code"),
             "date": _p("string", "Travel date (YYYY-MM-DD)", FLIGHT_DATES)}, lambda w: _sorted(w.flights), '''
def search_flights(origin, destination, date):
    key = f"{origin.strip().upper()}-{destination.strip().upper()}-{date}"
    return {"origin": origin.upper(), "destination": destination.upper(), "date": date,
            "flights": _DATA.get(key, []), "fare_currency": "ducat"}
'''),
    ToolDef("get_flight_status", "travel", "Live status and departure gate of a flight.",
            {"flight": _p("string", "Flight number")}, lambda w: _sorted(w.status), '''
def get_flight_status(flight):
    name, row = _find(_DATA, flight.replace(" ", ""), "flight")
    return {"flight": name, **row}
'''),
    ToolDef("get_hotel_rate", "travel", "Price of a stay at the city's partner hotel for a number of nights, "
            "in the local currency.",
            {"city": _p("string", "City name"), "nights": _p("integer", "Number of nights (1-30)")},
            lambda w: _sorted(w.hotels), '''
def get_hotel_rate(city, nights):
    if not 1 <= nights <= 30:
        raise ValueError("nights must be between 1 and 30")
    name, row = _find(_DATA, city, "city")
    return {"city": name, "hotel": row["hotel"], "nights": nights, "nightly_rate": row["nightly_rate"],
            "total": row["nightly_rate"] * nights, "currency": row["currency"]}
'''),
    ToolDef("get_recipe", "food", "Recipe of a dish: cuisine, servings, cooking time and ingredients in grams.",
            {"dish": _p("string", "Dish name")}, lambda w: _sorted(w.dishes), '''
def get_recipe(dish):
    name, row = _find(_DATA, dish, "dish")
    ingredients = [{"name": k, "grams": g} for k, g in sorted(row["ingredients"].items())]
    return {"dish": name, "cuisine": row["cuisine"], "servings": row["servings"], "minutes": row["minutes"],
            "ingredients": ingredients}
'''),
    ToolDef("get_nutrition", "food", "Nutrition facts of an ingredient: kilocalories and protein per 100 g.",
            {"ingredient": _p("string", "Ingredient name")}, lambda w: _sorted(w.nutrition), '''
def get_nutrition(ingredient):
    name, row = _find(_DATA, ingredient, "ingredient")
    return {"ingredient": name, **row}
'''),
    ToolDef("scale_recipe", "food", "Ingredient amounts of a dish scaled to a number of servings.",
            {"dish": _p("string", "Dish name"), "servings": _p("integer", "Number of servings (1-50)")},
            lambda w: _sorted({k: {"servings": r["servings"], "ingredients": r["ingredients"]}
                               for k, r in w.dishes.items()}), '''
def scale_recipe(dish, servings):
    if not 1 <= servings <= 50:
        raise ValueError("servings must be between 1 and 50")
    name, row = _find(_DATA, dish, "dish")
    factor = servings / row["servings"]
    grams = {k: round(g * factor, 1) for k, g in row["ingredients"].items()}
    ingredients = [{"name": k, "grams": int(g) if g == int(g) else g} for k, g in sorted(grams.items())]
    return {"dish": name, "servings": servings, "ingredients": ingredients}
'''),
    ToolDef("find_restaurant", "food", "The best-rated restaurant of a cuisine in a city, with its rating.",
            {"city": _p("string", "City name"), "cuisine": _p("string", "Cuisine", CUISINES)},
            lambda w: _sorted(w.restaurants), '''
def find_restaurant(city, cuisine):
    name, row = _find(_DATA, city, "city")
    restaurant, rating = _find(row, cuisine, "cuisine")[1]
    return {"city": name, "cuisine": cuisine, "restaurant": restaurant, "rating": rating}
'''),
)


def tool_source(t: ToolDef, w: World) -> str:
    data = t.data(w)
    parts = [] if data is None else [FIND, f"_DATA = {data!r}\n"]
    return "\n".join([*parts, t.body.strip() + "\n"])


def tool_record(t: ToolDef, w: World) -> dict:
    params = {"type": "object", "properties": t.params, "required": list(t.params)}
    return {"name": t.name, "domain": t.domain, "description": t.description, "parameters": params,
            "source": tool_source(t, w)}


# --- questions --------------------------------------------------------------------------------------

class Runner:
    """Executes the tools' own sources in-process (trusted: this script wrote them)."""

    def __init__(self, tools: list[dict]):
        self.fns: dict[str, Callable] = {}
        for t in tools:
            scope: dict[str, Any] = {}
            exec(compile(t["source"], t["name"], "exec"), scope)
            self.fns[t["name"]] = scope[t["name"]]

    def __call__(self, tool: str, /, **args: Any) -> Any:
        return self.fns[tool](**args)


@dataclass
class Chain:
    """A question under construction: its sub-questions with their gold calls and answers."""

    run: Runner
    subs: list[dict] = field(default_factory=list)

    def ask(self, text: str, tool: str, args: dict, answer: Any, after: Sequence[int] = (),
            parallel: bool = False) -> Any:
        """Add a sub-question; `answer(result)` reads its sub-answer from the gold call's result."""
        result = self.run(tool, **args)
        value = answer(result)
        printed = json.dumps(result, ensure_ascii=False, sort_keys=True)
        if not solves(printed, str(value)):
            raise AssertionError(f"{tool}{args}: {value!r} not found in {printed}")
        hop = 1 + max((self.subs[i - 1]["hop"] for i in after), default=0)
        self.subs.append({"id": len(self.subs) + 1, "hop": hop, "sub_question": text, "sub_answer": str(value),
                          "depends_on": list(after), "is_parallel": parallel, "needs_tool": True, "tool": tool,
                          "call": {"name": tool, "arguments": args}})
        return value


Template = Callable[[World, Draw, Chain, int], str]
"""Builds instance i of a question on the chain; returns the question text (the last sub-answer
is the final answer)."""


def capital_forecast_f(w: World, d: Draw, c: Chain, i: int) -> str:
    country, day = list(w.countries)[i], d.pick(DAYS)
    cap = c.ask(f"What is the capital of {country}?", "get_country_profile", {"country": country},
                lambda r: r["capital"])
    high = c.ask(f"What is the forecast high in {cap} on {day}, in Celsius?", "get_forecast",
                 {"city": cap, "day": day}, lambda r: r["high_c"], after=[1])
    c.ask(f"What is {high} degrees Celsius in Fahrenheit?", "convert_temperature",
          {"celsius": high, "unit": "fahrenheit"}, lambda r: r["value"], after=[2])
    return f"What is the forecast high for {day} in the capital of {country}, in degrees Fahrenheit?"


def capital_distance(w: World, d: Draw, c: Chain, i: int) -> str:
    country = list(w.countries)[(i + 2) % len(w.countries)]
    city = d.pick([x for x, r in w.cities.items() if r["country"] != country])
    cap = c.ask(f"What is the capital of {country}?", "get_country_profile", {"country": country},
                lambda r: r["capital"])
    c.ask(f"How many kilometres is it from {cap} to {city}?", "get_distance", {"from_city": cap, "to_city": city},
          lambda r: r["km"], after=[1])
    return f"How many kilometres is it from the capital of {country} to {city}?"


def quote_converted(w: World, d: Draw, c: Chain, i: int) -> str:
    company, date = list(w.companies)[i], d.pick(DATES)
    target = d.pick([x for x in w.currencies if x != w.quotes[w.companies[company]["ticker"]]["currency"]])
    ticker = c.ask(f"What is the ticker symbol of {company}?", "lookup_ticker", {"company": company},
                   lambda r: r["ticker"])
    quote = c.run("get_stock_quote", ticker=ticker, date=date)
    close = c.ask(f"What was the closing price of {ticker} on {date}?", "get_stock_quote",
                  {"ticker": ticker, "date": date}, lambda r: r["close"], after=[1])
    c.ask(f"How much is {close} {quote['currency']} in {target}?", "convert_currency",
          {"amount": close, "base": quote["currency"], "quote": target}, lambda r: r["converted"], after=[2])
    return f"What was the closing price of {company} shares on {date}, converted to {target}?"


def headquarters_country(w: World, d: Draw, c: Chain, i: int) -> str:
    company = list(w.companies)[INSTANCES + i]
    hq = c.ask(f"In which city does {company} have its headquarters?", "get_company_profile",
               {"company": company}, lambda r: r["headquarters"])
    c.ask(f"In which country is {hq}?", "get_city_profile", {"city": hq}, lambda r: r["country"], after=[1])
    return f"In which country does {company} have its headquarters?"


def publisher_city(w: World, d: Draw, c: Chain, i: int) -> str:
    title = list(w.books)[i * 5]
    pub = c.ask(f"Who published {title}?", "get_book_details", {"title": title}, lambda r: r["publisher"])
    c.ask(f"In which city is {pub} based?", "get_publisher", {"name": pub}, lambda r: r["city"], after=[1])
    return f"In which city is the publisher of '{title}' based?"


def earliest_book_copies(w: World, d: Draw, c: Chain, i: int) -> str:
    author, branch = list(w.authors)[i], d.pick(BRANCHES)
    title = c.ask(f"Which is the earliest book by {author}?", "search_books", {"author": author},
                  lambda r: min(r["books"], key=lambda b: b["year"])["title"])
    isbn = c.ask(f"What is the ISBN of {title}?", "get_book_details", {"title": title}, lambda r: r["isbn"],
                 after=[1])
    c.ask(f"How many copies of ISBN {isbn} does the {branch} branch have?", "check_availability",
          {"isbn": isbn, "branch": branch}, lambda r: r["copies"], after=[2])
    return f"How many copies of {author}'s earliest book does the {branch} branch of the library have?"


def cheapest_flight_status(w: World, d: Draw, c: Chain, i: int) -> str:
    key = sorted(w.flights)[i * 7 + 3]
    origin, dest, date = key.split("-", 2)
    by_code = {r["code"]: city for city, r in w.airports.items()}
    a, b = by_code[origin], by_code[dest]
    c.ask(f"What is the airport code of {a}?", "find_airport", {"city": a}, lambda r: r["code"])
    c.ask(f"What is the airport code of {b}?", "find_airport", {"city": b}, lambda r: r["code"], parallel=True)
    flight = c.ask(f"Which is the cheapest flight from {origin} to {dest} on {date}?", "search_flights",
                   {"origin": origin, "destination": dest, "date": date},
                   lambda r: min(r["flights"], key=lambda f: f["price"])["flight"], after=[1, 2])
    c.ask(f"What is the status of flight {flight}?", "get_flight_status", {"flight": flight},
          lambda r: r["status"], after=[3])
    return f"What is the status of the cheapest flight from {a} to {b} on {date}?"


def hotel_converted(w: World, d: Draw, c: Chain, i: int) -> str:
    city, nights = list(w.cities)[i * 5 + 1], d.integer(2, 9)
    local = w.hotels[city]["currency"]
    target = d.pick([x for x in w.currencies if x != local])
    total = c.ask(f"How much do {nights} nights at the partner hotel in {city} cost in {local}?", "get_hotel_rate",
                  {"city": city, "nights": nights}, lambda r: r["total"])
    c.ask(f"How much is {total} {local} in {target}?", "convert_currency",
          {"amount": total, "base": local, "quote": target}, lambda r: r["converted"], after=[1])
    return f"How much do {nights} nights at the partner hotel in {city} cost, in {target}?"


def main_ingredient_kcal(w: World, d: Draw, c: Chain, i: int) -> str:
    dish = list(w.dishes)[i]
    main = c.ask(f"Which ingredient of {dish} is used in the largest amount?", "get_recipe", {"dish": dish},
                 lambda r: max(r["ingredients"], key=lambda x: x["grams"])["name"])
    c.ask(f"How many kilocalories per 100 g does {main} have?", "get_nutrition", {"ingredient": main},
          lambda r: r["kcal_per_100g"], after=[1])
    return f"How many kilocalories per 100 g does the main ingredient (the largest amount) of {dish} have?"


def capital_restaurant(w: World, d: Draw, c: Chain, i: int) -> str:
    country, cuisine = list(w.countries)[(i + 5) % len(w.countries)], CUISINES[i % len(CUISINES)]
    cap = c.ask(f"What is the capital of {country}?", "get_country_profile", {"country": country},
                lambda r: r["capital"])
    c.ask(f"Which is the best-rated {cuisine} restaurant in {cap}?", "find_restaurant",
          {"city": cap, "cuisine": cuisine}, lambda r: r["restaurant"], after=[1])
    return f"Which is the best-rated {cuisine} restaurant in the capital of {country}?"


def headquarters_aqi(w: World, d: Draw, c: Chain, i: int) -> str:
    company = list(w.companies)[10 + i]
    hq = c.ask(f"In which city does {company} have its headquarters?", "get_company_profile",
               {"company": company}, lambda r: r["headquarters"])
    c.ask(f"What is the air quality index in {hq}?", "get_air_quality", {"city": hq}, lambda r: r["aqi"], after=[1])
    return f"What is the air quality index (AQI) in the city where {company} has its headquarters?"


def author_home_capital(w: World, d: Draw, c: Chain, i: int) -> str:
    title = list(w.books)[i * 5 + 2]
    author = c.ask(f"Who wrote {title}?", "get_book_details", {"title": title}, lambda r: r["author"])
    country = c.ask(f"What is the nationality of {author}?", "get_author_profile", {"author": author},
                    lambda r: r["nationality"], after=[1])
    c.ask(f"What is the capital of {country}?", "get_country_profile", {"country": country},
          lambda r: r["capital"], after=[2])
    return f"What is the capital of the home country of the author of '{title}'?"


def scaled_main_ingredient(w: World, d: Draw, c: Chain, i: int) -> str:
    dish, servings = list(w.dishes)[INSTANCES + i], d.integer(7, 20)
    main = c.ask(f"Which ingredient of {dish} is used in the largest amount?", "get_recipe", {"dish": dish},
                 lambda r: max(r["ingredients"], key=lambda x: x["grams"])["name"])
    c.ask(f"How many grams of {main} does {dish} need for {servings} servings?", "scale_recipe",
          {"dish": dish, "servings": servings},
          lambda r: next(x["grams"] for x in r["ingredients"] if x["name"] == main), after=[1])
    return f"How many grams of its main ingredient (the largest amount) does {dish} need for {servings} servings?"


TEMPLATES: tuple[Template, ...] = (
    capital_forecast_f, capital_distance, quote_converted, headquarters_country, publisher_city,
    earliest_book_copies, cheapest_flight_status, hotel_converted, main_ingredient_kcal, capital_restaurant,
    headquarters_aqi, author_home_capital, scaled_main_ingredient)


def make_item(template: Template, w: World, d: Draw, run: Runner, i: int) -> dict:
    chain = Chain(run)
    question = template(w, d, chain, i)
    return {"id": "", "template": template.__name__, "question": question, "answer": chain.subs[-1]["sub_answer"],
            "subquestions": chain.subs}


def generate(seed: int) -> tuple[list[dict], dict[str, list[dict]]]:
    w = make_world(seed)
    tools = [tool_record(t, w) for t in TOOLS]
    run, d = Runner(tools), Draw(seed + 1)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for i in range(INSTANCES):  # round-robin: the first len(TEMPLATES) items of a split cover every template
        split = "train" if i < TRAIN_PER_TEMPLATE else "test"
        splits[split] += [make_item(t, w, d, run, i) for t in TEMPLATES]
    for split, items in splits.items():
        for n, item in enumerate(items):
            item["id"] = f"{split}-{n:04d}"
    questions = [it["question"] for items in splits.values() for it in items]
    assert len(set(questions)) == len(questions), "duplicate questions"
    return tools, splits


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"output directory (default {OUT})")
    ap.add_argument("--seed", type=int, default=SEED, help="generator seed (the shipped data uses the default)")
    args = ap.parse_args(argv)
    tools, splits = generate(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "tools.jsonl", tools)
    for split, items in splits.items():
        write_jsonl(args.out / f"{split}.jsonl", items)
    size = sum(p.stat().st_size for p in args.out.glob("*.jsonl"))
    sizes = ", ".join(f"{s} {len(q)}" for s, q in splits.items())
    domains = len({t["domain"] for t in tools})
    print(f"wrote {len(tools)} tools in {domains} domains and {sizes} questions to {args.out} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
