"""Families where a response must agree with a reference answer (shown to the judge) or with a value the judge can
check itself: numbers, names, dates, units, short code outputs, choices."""

from __future__ import annotations

import datetime
import random
from typing import Callable

from .base import Draft, family


def _near_numbers(value: int, rng: random.Random) -> list[int]:
    """Near misses of ``value``, closest first: off by one, a digit swapped, off by ten."""
    out = [value + rng.choice([-1, 1]), value + rng.choice([-10, 10])]
    digits = str(abs(value))
    if len(digits) >= 2 and digits[0] != digits[1]:
        out.insert(1, int(digits[1] + digits[0] + digits[2:]))
    return [v for v in dict.fromkeys(out) if v != value and v >= 0]


_COUNTABLES = ["books", "chairs", "boxes", "apples", "tickets", "stamps", "coins", "pencils", "marbles", "plates"]
_PEOPLE = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kemi", "Leo"]


@family("ref_number", "reference", templates=6)
def ref_number(rng: random.Random, template: int) -> Draft:
    """A short word problem with a numeric reference answer; the misses are off by one, a swapped digit, off by 10."""
    who, thing = rng.choice(_PEOPLE), rng.choice(_COUNTABLES)
    a, b = rng.randint(12, 95), rng.randint(3, 40)
    value = a + b
    question = [f"{who} has {a} {thing} and buys {b} more. How many {thing} does {who} have now?",
                f"A shelf holds {a} {thing}. Someone adds {b}. How many {thing} are on the shelf?",
                f"What is the total of {a} {thing} and {b} {thing}?",
                f"{who} counted {a} {thing} on Monday and {b} on Tuesday. How many in all?",
                f"If a box has {a} {thing} and another has {b}, how many {thing} are there together?",
                f"Add {b} {thing} to a pile of {a}. How many {thing} are in the pile?"][template]
    answer = ["{who} has {v} {thing} now.", "There are {v} {thing} on the shelf.", "The total is {v} {thing}.",
              "{who} counted {v} {thing} in all.", "There are {v} {thing} together.", "The pile has {v} {thing}."]
    say = answer[template]
    misses = _near_numbers(value, rng)
    responses = [say.format(who=who, v=value, thing=thing)] + [say.format(who=who, v=m, thing=thing) for m in misses]
    notes = [f"gives {value}, which matches the reference {value}"] + [
        f"gives {m}, which does not match the reference {value}" for m in misses]
    return Draft(prompt=question, responses=responses, notes=notes,
                 grades=[rng.choice([9, 10])] + [rng.choice([2, 3]) for _ in misses],
                 criteria=[(f"The number must equal the reference answer {value}", 80), ("Answers directly", 20)],
                 rationale=f"it is the only response that gives the reference value {value}", reference=str(value))


Miss = tuple[str, str]  # (response, note)


def _draft(rng: random.Random, prompt: object, best: tuple[str, str], misses: list[Miss],
           criteria: list[tuple[str, int]], rationale: str, reference: str | None) -> Draft:
    """Assemble a draft: the best response graded 9-10, each near miss 1-3 (misses deduplicated, closest first)."""
    seen = {best[0]}
    kept = []
    for text, note in misses:
        if text not in seen:
            seen.add(text)
            kept.append((text, note))
    kept = kept[:3]
    return Draft(prompt=prompt, responses=[best[0]] + [t for t, _ in kept], notes=[best[1]] + [n for _, n in kept],
                 grades=[rng.choice([9, 10])] + [rng.choice([1, 2, 3]) for _ in kept], criteria=criteria,
                 rationale=rationale, reference=reference)


# ---------------------------------------------------------------- compute_arith

_OPS = {"+": ("plus", lambda a, b: a + b), "-": ("minus", lambda a, b: a - b), "x": ("times", lambda a, b: a * b)}
_AVOID = {(17, 25), (25, 17), (12, 12), (17, 24), (24, 17)}


def _operands(rng: random.Random) -> tuple[int, str, int]:
    """Two operands and an operator: 2-digit + and -, 1-digit x 2-digit; never the overused textbook pairs."""
    while True:
        op = rng.choice(list(_OPS))
        if op == "+":
            a, b = rng.randint(10, 99), rng.randint(10, 99)
        elif op == "-":
            a = rng.randint(20, 99)
            b = rng.randint(10, a - 1)
        else:
            a, b = rng.randint(2, 9), rng.randint(11, 99)
        if (a, b) not in _AVOID:
            return a, op, b


@family("compute_arith", "reference", templates=6)
def compute_arith(rng: random.Random, template: int) -> Draft:
    """Small arithmetic with no reference: the judge computes the value itself; misses are near numbers."""
    a, op, b = _operands(rng)
    word, fn = _OPS[op]
    value = fn(a, b)
    expr = f"{a} {op} {b}"
    who = rng.choice(_PEOPLE)
    prompt: object = [f"What is {expr}?", f"Calculate {a} {word} {b}.", f"Quick maths: {a}{op}{b} = ?",
                      f"{who} asks: can you work out {expr} for me?",
                      [{"role": "system", "content": "You are a careful calculator. Reply with the result."},
                       {"role": "user", "content": expr}],
                      f"Help me check my homework: what does {a} {word} {b} equal?"][template]
    say = ["{e} = {v}.", "The answer is {v}.", "{v}", "Sure, {e} comes to {v}.", "Result: {v}", "It equals {v}."][template]
    misses = [(say.format(e=expr, v=m), f"says {m}, but {expr} = {value}") for m in _near_numbers(value, rng)]
    return _draft(rng, prompt, (say.format(e=expr, v=value), f"computes {expr} = {value} correctly"), misses,
                  [(f"The result must be {expr} = {value}", 80), ("States the result plainly", 20)],
                  f"it is the only response with the correct value {value} for {expr}", None)


# ---------------------------------------------------------------- made-up names

_FIRST = ["Ava", "Bram", "Celia", "Dario", "Esme", "Fenna", "Gideon", "Halla", "Ilya", "Juno", "Kasimir", "Lorna",
          "Milo", "Nadia", "Orrin", "Pia", "Quentin", "Rosa", "Sven", "Talia", "Umar", "Vera", "Wendel", "Yara",
          "Zeno", "Anouk", "Basil", "Cora", "Emil", "Ines"]
_SUR_A = ["Tan", "Mor", "Vel", "Brin", "Cas", "Dal", "Fen", "Hol", "Kes", "Lin", "Ost", "Pell", "Quar", "Rad", "Sol",
          "Thorn", "Ull", "Wex", "Gar", "Nim"]
_SUR_B = ["wick", "more", "ford", "dale", "by", "ridge", "ton", "ley", "stead", "holm", "croft", "mere", "gate"]
_TOWN_A = ["Brindle", "Ashen", "Corve", "Dunmar", "Elder", "Frost", "Gull", "Hazel", "Ivel", "Kettle", "Lark",
           "Marrow", "Nettle", "Oaken", "Pebble", "Quill", "Raven", "Saltin", "Tarn", "Wyther"]
_TOWN_B = ["combe", "haven", "field", "bury", "port", "wick", "mouth", "stow", "thorpe", "ham", "cross", "brook"]
_CO_A = ["Velm", "Quor", "Zint", "Lum", "Brax", "Ordi", "Kael", "Tessa", "Nyvo", "Prism", "Halc", "Omni", "Vanta",
         "Sable", "Crest"]
_CO_B = ["ora", "ex", "ix", "ara", "on", "ium", "ava", "ent", "alis", "yte"]
_CO_C = ["Systems", "Labs", "Foods", "Works", "Textiles", "Robotics", "Press", "Motors", "Optics", "Audio"]
_ADJ = ["Silent", "Copper", "Hollow", "Winter", "Painted", "Lost", "Seventh", "Amber", "Broken", "Distant",
        "Glass", "Velvet", "Northern", "Sleeping", "Crooked"]
_NOUN = ["Lantern", "Orchard", "Harbour", "Clockmaker", "Garden", "Staircase", "Map", "Violin", "Tide", "Archive",
         "Compass", "Meadow", "Bridge", "Mirror", "Kite"]
_DEVICES = ["folding telescope", "steam loom", "tidal clock", "pocket barometer", "wind organ", "seed drill",
            "lantern pump", "mirror compass", "rope elevator", "glass kettle", "sun press", "copper sieve"]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_SUR_A)}{rng.choice(_SUR_B)}"


def _town(rng: random.Random) -> str:
    return rng.choice(_TOWN_A) + rng.choice(_TOWN_B)


def _company(rng: random.Random) -> str:
    return f"{rng.choice(_CO_A)}{rng.choice(_CO_B)} {rng.choice(_CO_C)}"


def _book(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}"
    return f"The {rng.choice(_NOUN)} of {_town(rng)}"


def _near_person(name: str, rng: random.Random) -> list[str]:
    """Other made-up people, closest first: same first name, then same surname, then a different person."""
    first, last = name.split()
    out = [f"{first} {rng.choice(_SUR_A)}{rng.choice(_SUR_B)}", f"{rng.choice(_FIRST)} {last}", _person(rng)]
    return [n for n in dict.fromkeys(out) if n != name]


def _near_place(name: str, maker: Callable[[random.Random], str], rng: random.Random) -> list[str]:
    """Other made-up places or companies that neither contain nor are contained in ``name``."""
    out = [maker(rng) for _ in range(6)]
    return [n for n in dict.fromkeys(out) if n != name and name not in n and n not in name][:3]


@family("ref_name", "reference", templates=6)
def ref_name(rng: random.Random, template: int) -> Draft:
    """Questions about made-up entities whose answer (a made-up name) is the reference; misses name another."""
    person, town, company = _person(rng), _town(rng), _company(rng)
    if template == 0:
        prompt, ref, say = f"Who founded the company {company}?", person, f"{company} was founded by {{x}}."
    elif template == 1:
        book = _book(rng)
        prompt, ref, say = f"Who wrote the novel '{book}'?", person, f"'{book}' was written by {{x}}."
    elif template == 2:
        prompt, ref, say = f"In which town was {person} born?", town, f"{person} was born in {{x}}."
    elif template == 3:
        device = rng.choice(_DEVICES)
        prompt = f"Which engineer from {town} invented the {device}?"
        ref, say = person, f"The {device} was invented by {{x}}."
    elif template == 4:
        item = rng.choice(["kettle", "bicycle", "lamp", "backpack", "drone", "tent"])
        product = f"{rng.choice(_ADJ)} {item} {rng.randint(2, 99)}0"
        prompt, ref, say = f"Which company makes the {product}?", company, f"The {product} is made by {{x}}."
    else:
        prompt, ref, say = f"Who was mayor of {town} in {rng.randint(1900, 2020)}? Just the name.", person, "{x}"
    if ref == person:
        others = _near_person(person, rng)
    else:
        others = _near_place(ref, _town if ref == town else _company, rng)
    misses = [(say.format(x=o), f"names {o}, but the reference is {ref}") for o in others]
    return _draft(rng, prompt, (say.format(x=ref), f"names {ref}, matching the reference {ref}"), misses,
                  [(f"The name must be {ref}, as in the reference", 85), ("Answers the question directly", 15)],
                  f"it is the only response that gives the reference name {ref}", ref)


# ---------------------------------------------------------------- ref_date

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _event(rng: random.Random) -> tuple[str, str]:
    """(question clause, statement clause) of a made-up dated event."""
    town, company, person = _town(rng), _company(rng), _person(rng)
    return rng.choice([(f"did the {town} Bridge open", f"The {town} Bridge opened"),
                       (f"was {company} founded", f"{company} was founded"),
                       (f"was the Treaty of {town} signed", f"The Treaty of {town} was signed"),
                       (f"did the {town} Library open", f"The {town} Library opened"),
                       (f"was the first {town} Lantern Festival held", f"The first {town} Lantern Festival was held"),
                       (f"was {person} born", f"{person} was born"),
                       (f"did {person} publish '{_book(rng)}'", f"{person} published it")])


def _fmt_date(y: int, m: int, d: int, template: int) -> str:
    if template == 1:
        return f"{_MONTHS[m - 1]} {d}, {y}"
    if template == 2:
        return str(y)
    if template == 3:
        return f"{y}-{m:02d}-{d:02d}"
    if template == 4:
        return f"{d:02d}/{m:02d}/{y}"
    if template == 5:
        return f"{_WEEKDAYS[datetime.date(y, m, d).weekday()]}, {d} {_MONTHS[m - 1]} {y}"
    return f"{d} {_MONTHS[m - 1]} {y}"


def _date_misses(y: int, m: int, d: int, rng: random.Random, template: int) -> list[tuple[tuple[int, int, int], str]]:
    """Wrong dates with what is wrong, closest first."""
    if template == 2:
        swap = int(str(y)[:2] + str(y)[3] + str(y)[2])
        years = [y + rng.choice([-1, 1]), swap if swap != y else y + 2, y + rng.choice([-10, 10])]
        return [((v, m, d), "the wrong year") for v in years]
    wrong_day = d + 1 if d == 1 or (d < 28 and rng.random() < 0.5) else d - 1
    out = [((y + rng.choice([-1, 1, -10, 10]), m, d), "the wrong year"), ((y, m, wrong_day), "the wrong day")]
    if d <= 12 and d != m:
        out.insert(rng.randint(0, 2), ((y, d, m), "day and month swapped"))
    else:
        out.append(((y, m % 12 + 1, d), "the wrong month"))
    return out


@family("ref_date", "reference", templates=6)
def ref_date(rng: random.Random, template: int) -> Draft:
    """Dates of made-up events against a reference; misses: wrong year, wrong day, day and month swapped."""
    y, m, d = rng.randint(1850, 2020), rng.randint(1, 12), rng.randint(1, 28)
    question, statement = _event(rng)
    prompt = [f"On what date {question}?", f"When {question}? Please give the full date.",
              f"In which year {question}?", f"When {question}? Answer in YYYY-MM-DD format.",
              f"When {question}? Use the DD/MM/YYYY format.", f"When exactly {question}? Include the weekday."][template]
    say = [f"{statement} on {{x}}.", f"{statement} on {{x}}.", f"{statement} in {{x}}.", "Date: {x}",
           f"{statement} on {{x}}.", f"{statement} on {{x}}."][template]
    ref = _fmt_date(y, m, d, template)
    misses = []
    for (yy, mm, dd), what in _date_misses(y, m, d, rng, template):
        x = _fmt_date(yy, mm, dd, template)
        if x != ref:
            misses.append((say.format(x=x), f"gives {x}; the reference is {ref} ({what})"))
    return _draft(rng, prompt, (say.format(x=ref), f"gives {ref}, matching the reference date"), misses,
                  [(f"The date must be {ref}, as in the reference", 85), ("Uses the requested date format", 15)],
                  f"it is the only response whose date agrees with the reference {ref}", ref)


# ---------------------------------------------------------------- ref_unit

# (from unit, to unit, factor, long names, kind)
_CONVERSIONS = [("g", "kg", 1000, "grams", "kilograms", "mass"), ("mg", "g", 1000, "milligrams", "grams", "mass"),
                ("cm", "m", 100, "centimetres", "metres", "length"), ("m", "km", 1000, "metres", "kilometres", "length"),
                ("mm", "cm", 10, "millimetres", "centimetres", "length"),
                ("mL", "L", 1000, "millilitres", "litres", "volume"), ("min", "h", 60, "minutes", "hours", "time")]
_THINGS = {"mass": (["parcel", "suitcase", "sack of rice", "bag of apples", "crate"], ["flour", "sugar", "clay"],
                    "weight"),
           "length": (["rope", "table", "trail", "garden hose", "fence"], ["ribbon", "cable", "fabric"], "length"),
           "volume": (["water tank", "bottle", "jug", "bucket", "kettle"], ["water", "juice", "paint"], "capacity"),
           "time": (["film", "flight", "concert", "lecture", "podcast"], ["music", "video", "audio"], "running time")}


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


@family("ref_unit", "reference", templates=6)
def ref_unit(rng: random.Random, template: int) -> Draft:
    """Quantities with units against a reference; misses: wrong unit, scaled by a power of ten, wrong number."""
    u1, u2, factor, long1, long2, kind = rng.choice(_CONVERSIONS)
    value = rng.randint(1, 40) / 4 if kind == "time" else rng.randint(5, 995) / 10
    src = _fmt(value * factor)
    objects, stuff, quantity = _THINGS[kind]
    obj, product = rng.choice(objects), f"{_company(rng).split()[0]} {rng.choice(['X2', 'Pro', 'Mini', 'Max', 'One'])}"
    prompt = [f"Convert {src} {u1} to {u2}.", f"How many {long2} is {src} {long1}?",
              f"A {obj} measures {src} {u1}. Express this in {long2}.",
              f"What is {src} {u1} in {u2}? Reply with the number and unit only.",
              f"What is the listed {quantity} of the {product}?",
              f"I have {src} {u1} of {rng.choice(stuff)}. How much is that in {long2}?"][template]
    say = [f"{src} {u1} is {{x}}.", "That is {x}.", f"The {obj} measures {{x}}.", "{x}",
           f"The {product} has a listed {quantity} of {{x}}.", "You have {x}."][template]
    ref = f"{_fmt(value)} {u2}"
    scaled = rng.choice([value * 10, value / 10, value * factor])
    wrong = value + rng.choice([-1, 1]) if value > 2 else value + rng.choice([0.5, 1])
    misses = [(f"{_fmt(value)} {u1}", f"gives {_fmt(value)} {u1}: the right number but the wrong unit ({u1}, not {u2})"),
              (f"{_fmt(scaled)} {u2}", f"gives {_fmt(scaled)} {u2}, off by a power of ten from {ref}"),
              (f"{_fmt(wrong)} {u2}", f"gives {_fmt(wrong)} {u2}, a different number from {ref}")]
    rng.shuffle(misses)
    misses = [(say.format(x=x), note) for x, note in misses if x != ref]
    return _draft(rng, prompt, (say.format(x=ref), f"gives {ref}, matching the reference {ref}"), misses,
                  [(f"The quantity must be {ref}: right number and right unit", 90), ("Answers directly", 10)],
                  f"it is the only response with both the number and the unit of the reference {ref}", ref)


# ---------------------------------------------------------------- ref_code_output

_WORDS = ["planet", "garden", "kettle", "python", "window", "marble", "harbor", "lantern", "pickle", "rocket",
          "violet", "banjo", "cactus", "puzzle", "saddle", "tundra", "walrus", "yogurt", "zipper", "falcon"]

Snippet = tuple[str, str, str, str, str]  # code, output, off-by-one output, wrong-type output, error name


def _snippet(rng: random.Random) -> Snippet:
    """A tiny Python program, its real output and two plausible wrong outputs (computed with Python itself)."""
    kind = rng.randrange(9)
    w = rng.choice(_WORDS)
    if kind == 0:
        return f'print(len("{w}"))', str(len(w)), str(len(w) + rng.choice([-1, 1])), f"'{len(w)}'", "TypeError"
    if kind == 1:
        i = rng.randint(0, 2)
        j = rng.randint(i + 2, len(w) - 1)
        return (f'word = "{w}"\nprint(word[{i}:{j}])', w[i:j], w[i:j + 1], str(list(w[i:j])), "IndexError")
    nums = rng.sample(range(1, 60), rng.randint(3, 5))
    if kind == 2:
        return f"nums = {nums}\nprint(sum(nums))", str(sum(nums)), str(sum(nums[:-1])), f"{sum(nums)}.0", "TypeError"
    if kind == 3:
        s = sorted(nums)
        swapped = s[:]
        swapped[0], swapped[1] = swapped[1], swapped[0]
        return f"print(sorted({nums}))", str(s), str(swapped), str(tuple(s)), "TypeError"
    if kind == 4:
        n = rng.randint(3, 12)
        code = f"total = 0\nfor i in range({n}):\n    total += i\nprint(total)"
        return code, str(n * (n - 1) // 2), str(n * (n + 1) // 2), f"{n * (n - 1) // 2}.0", "NameError"
    if kind == 5:
        k = rng.randint(2, 4)
        short = w[:rng.randint(2, 3)]
        return f'print("{short}" * {k})', short * k, short * (k + 1), str([short] * k), "TypeError"
    if kind == 6:
        items = rng.sample(_WORDS, 4)
        i = rng.randint(0, 2)
        return f"items = {items}\nprint(items[{i}])", items[i], items[i + 1], str([items[i]]), "IndexError"
    if kind == 7:
        a, b = rng.randint(20, 99), rng.randint(3, 9)
        if a % b == 0:
            a += 1
        return f"print({a} // {b})", str(a // b), str(a // b + 1), str(a / b), "ZeroDivisionError"
    items = rng.sample(_WORDS, 3)
    return (f'print("-".join({items}))', "-".join(items), "-".join(items[:2]), str(items), "TypeError")


@family("ref_code_output", "reference", templates=6)
def ref_code_output(rng: random.Random, template: int) -> Draft:
    """A tiny Python snippet and its real printed output as the reference; misses: off by one, wrong type, error."""
    code, out, off, typed, err = _snippet(rng)
    prompt = [f"What does this Python code print?\n\n{code}",
              f"Predict the output of this snippet:\n```python\n{code}\n```",
              f"I ran the following and want to check my understanding. What gets printed?\n{code}",
              f"What is printed when this runs?\n```\n{code}\n```\nReply with the output only.",
              f"Trace this code and tell me the final output.\n```python\n{code}\n```",
              f"Quick check: what will Python show for this?\n{code}"][template]
    say = ["It prints {x}.", "Output:\n```\n{x}\n```", "The output is {x}.", "{x}",
           "Tracing it step by step, the program prints {x}.", "Python shows `{x}`."][template]
    error = [f"It raises a {err}.", f"Output:\n```\n{err}\n```", f"It does not print anything; it fails with a {err}.",
             err, f"Tracing it step by step, the program stops with a {err}.", f"Python shows a {err}."][template]
    misses = [(say.format(x=off), f"gives {off}, one step off from the real output {out}"),
              (say.format(x=typed), f"gives {typed}, the wrong type; the code prints {out}"),
              (error, f"claims a {err}, but the code runs and prints {out}")]
    return _draft(rng, prompt, (say.format(x=out), f"gives {out}, which matches the reference output {out}"), misses,
                  [(f"The stated output must be exactly {out}", 85), ("Does not invent errors", 15)],
                  f"it is the only response that states the real output {out}", out)


# ---------------------------------------------------------------- ref_choice

_ANIMALS = ["otter", "heron", "badger", "lizard", "moth", "camel", "rabbit", "salmon"]
_NON_ANIMALS = ["teapot", "ladder", "pillow", "bucket", "violin", "candle", "blanket", "shovel", "compass", "mirror"]
_COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "grey", "white"]
_PETS = ["kite", "bicycle", "parrot", "scarf", "umbrella", "canoe", "teapot", "lamp"]


def _question(rng: random.Random) -> tuple[str, list[str], int]:
    """A multiple-choice question, its four options and the index of the correct one."""
    kind = rng.randrange(6)
    if kind in (0, 1):
        opts = [str(v) for v in rng.sample(range(10, 300), 4)]
        pick = max if kind == 0 else min
        q = "Which of these numbers is the largest?" if kind == 0 else "Which of these numbers is the smallest?"
        return q, opts, opts.index(str(pick(int(o) for o in opts)))
    if kind == 2:
        odd = [str(2 * v + 1) for v in rng.sample(range(5, 99), 3)]
        opts = odd + [str(2 * rng.randint(5, 99))]
        rng.shuffle(opts)
        return "Which of these numbers is even?", opts, next(i for i, o in enumerate(opts) if int(o) % 2 == 0)
    if kind == 3:
        opts = [rng.choice(_ANIMALS)] + rng.sample(_NON_ANIMALS, 3)
        rng.shuffle(opts)
        return "Which of these is an animal?", opts, opts.index(next(o for o in opts if o in _ANIMALS))
    if kind == 4:
        who, pet = rng.choice(_FIRST), rng.choice(_PETS)
        opts = rng.sample(_COLOURS, 4)
        right = rng.randrange(4)
        return f"{who} owns a {opts[right]} {pet}. What colour is {who}'s {pet}?", opts, right
    by_letter = {w[0]: w for w in rng.sample(_WORDS, len(_WORDS))}
    opts = [by_letter[c] for c in rng.sample(sorted(by_letter), 4)]
    right = rng.randrange(4)
    return f"Which of these words starts with the letter '{opts[right][0]}'?", opts, right


@family("ref_choice", "reference", templates=6)
def ref_choice(rng: random.Random, template: int) -> Draft:
    """A multiple-choice question (A-D) with the reference letter; misses pick another letter."""
    q, opts, right = _question(rng)
    L = "ABCD"  # noqa: N806
    lines = "\n".join(f"{L[i]}) {o}" for i, o in enumerate(opts))
    prompt: object = [f"{q}\n{lines}",
                      f"{q}\n" + " ".join(f"({L[i]}) {o}" for i, o in enumerate(opts)) + "\nAnswer with the letter.",
                      [{"role": "system", "content": "Answer multiple-choice questions with the letter and the option."},
                       {"role": "user", "content": f"{q}\n{lines}"}],
                      f"Pick one. {q}\n" + "\n".join(f"{L[i]}. {o}" for i, o in enumerate(opts)),
                      f"{q} Options: " + "; ".join(f"{L[i]}: {o}" for i, o in enumerate(opts)) + ".",
                      f"Multiple choice: {q}\n" + "\n".join(f"{L[i]} - {o}" for i, o in enumerate(opts))][template]
    say = ["{l}", "The answer is {l}.", "{l}) {o}", "I would choose {l}, {o}.", "Answer: {l} ({o})",
           "**{l}** - {o}"][template]
    ref = L[right]
    wrong = [i for i in range(4) if i != right]
    rng.shuffle(wrong)
    misses = [(say.format(l=L[i], o=opts[i]), f"picks {L[i]} ({opts[i]}), but the reference answer is {ref}")
              for i in wrong]
    return _draft(rng, prompt, (say.format(l=ref, o=opts[right]), f"picks {ref} ({opts[right]}), matching the reference {ref}"),
                  misses, [(f"The chosen letter must be {ref} ({opts[right]})", 90), ("Gives a clear single choice", 10)],
                  f"it is the only response that picks the reference option {ref}", ref)


# ---------------------------------------------------------------- ref_list

_NOUNS = ["apricot", "beacon", "cobalt", "dingo", "ember", "fjord", "glacier", "hammock", "igloo", "jasmine",
          "kiosk", "lagoon", "mango", "nectar", "oyster", "pepper", "quartz", "raisin", "sherbet", "tulip",
          "umber", "vortex", "walnut", "yarrow", "zephyr", "anchor", "bramble", "cinder", "dolphin", "easel"]


def _list_misses(items: list[str], rng: random.Random) -> list[tuple[list[str], str]]:
    """Near misses of an ordered list: one adjacent pair swapped, one item left out, closest first."""
    i = rng.randrange(len(items) - 1)
    swapped = items[:]
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    j = rng.randrange(len(items))
    k = (j + rng.randint(1, len(items) - 1)) % len(items)
    out = [(swapped, f"puts {items[i + 1]} before {items[i]}, out of order"),
           (items[:j] + items[j + 1:], f"leaves out {items[j]}, so it has {len(items) - 1} of {len(items)} items"),
           (items[:k] + items[k + 1:], f"leaves out {items[k]}, so it has {len(items) - 1} of {len(items)} items")]
    return out


@family("ref_list", "reference", templates=6)
def ref_list(rng: random.Random, template: int) -> Draft:
    """Sorting and alphabetizing with the sorted list as the reference; misses swap a pair or drop an item."""
    n = rng.randint(4, 7)
    if template in (0, 2, 4):
        raw = [str(v) for v in rng.sample(range(1, 200), n)]
        items = sorted(raw, key=int, reverse=template == 2)
    else:
        raw = rng.sample(_FIRST if template == 3 else _NOUNS, n)
        items = sorted(raw)
    shown = ", ".join(raw)
    prompt: object = [f"Sort these numbers from smallest to largest: {shown}.",
                      f"Put these words in alphabetical order: {shown}.",
                      f"Arrange these from largest to smallest as a numbered list: {shown}",
                      "List these names alphabetically, one per line:\n" + "\n".join(raw),
                      [{"role": "system", "content": "You sort things. Show the order with < signs."},
                       {"role": "user", "content": f"Order ascending: {shown}"}],
                      f"Alphabetize the following and give them as a comma-separated list: {shown}."][template]

    def show(seq: list[str]) -> str:
        return [", ".join(seq), "In alphabetical order: " + ", ".join(seq),
                "\n".join(f"{i + 1}. {x}" for i, x in enumerate(seq)), "\n".join(seq), " < ".join(seq),
                ", ".join(seq)][template]

    misses = [(show(seq), note) for seq, note in _list_misses(items, rng)]
    ref = ", ".join(items)
    return _draft(rng, prompt, (show(items), f"lists all {n} items in the reference order {ref}"), misses,
                  [(f"The order must be {ref}", 80), (f"All {n} items must appear exactly once", 20)],
                  f"it is the only response with every item in the reference order {ref}", ref)
