"""Families where the judge must use common knowledge, with no reference answer given: well-known world facts
(capitals, chemical symbols, animals' legs and wings, paint mixing, opposites, the planets, everyday numbers) and
everyday facts it can compute (weekdays, days in a month, unit conversions, letters in a word).

Every table and template here was written for this project. The near misses are the mistakes people really make: a
country's best-known city instead of its capital, a similar symbol, a conversion off by a factor of ten.
"""

from __future__ import annotations

import calendar
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from .base import Draft, Prompt, family

# ---------------------------------------------------------------------------------------------------------- shared

_LEADS = ["", "", "Quick one. ", "For a pub quiz: ", "My nephew asked me this. ", "Settle a bet for us. ",
          "Just checking: ", "I'm making flashcards. ", "Trivia night prep: ", "Help me with homework: ",
          "Without looking it up: ", "Hi! ", "Sorry if this is basic. ", "Random question. "]
_CONFIDENT = ["I'm completely certain of this.", "This is a well-known fact, so you can rely on it.",
              "Any textbook will confirm this.", "There's no doubt about it.", "I've double-checked, and it's right."]
_PAD_OPEN = ["Great question! ", "Happy to help with this! ", "Good one! ", "Sure thing! "]
_PAD_CLOSE = [" Hope that helps!", " Let me know if you have more questions.", " Good luck with it!",
              " Feel free to ask anything else."]


@dataclass(frozen=True)
class Fact:
    """One answerable question: ``keys`` (words every wording of it holds), the question ``q`` and noun phrase
    ``n``, the ``answer``, a sentence ``say`` ("{x}" is the answer slot), a confident-sounding ``why`` that fits any
    answer, the ``right`` note and the near misses ``(wrong answer, note)``, closest first."""

    keys: tuple[str, ...]
    q: str
    n: str
    answer: str
    say: str
    why: str
    right: str
    misses: tuple[tuple[str, str], ...]
    criterion: str


# ---------------------------------------------------------------------------------------------------- world tables

# country (as written in a sentence), capital, near misses: (city, the country it is the capital of, or "" for a
# large or well-known city that is not a capital)
CAPITALS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("France", "Paris", [("Marseille", ""), ("Lyon", ""), ("Brussels", "Belgium")]),
    ("Italy", "Rome", [("Milan", ""), ("Venice", ""), ("Vienna", "Austria")]),
    ("Spain", "Madrid", [("Barcelona", ""), ("Seville", ""), ("Lisbon", "Portugal")]),
    ("Germany", "Berlin", [("Munich", ""), ("Hamburg", ""), ("Vienna", "Austria")]),
    ("Japan", "Tokyo", [("Osaka", ""), ("Kyoto", ""), ("Seoul", "South Korea")]),
    ("China", "Beijing", [("Shanghai", ""), ("Hong Kong", ""), ("Hanoi", "Vietnam")]),
    ("India", "New Delhi", [("Mumbai", ""), ("Kolkata", ""), ("Kathmandu", "Nepal")]),
    ("Russia", "Moscow", [("St Petersburg", ""), ("Kyiv", "Ukraine"), ("Minsk", "Belarus")]),
    ("the United Kingdom", "London", [("Manchester", ""), ("Birmingham", ""), ("Dublin", "Ireland")]),
    ("Ireland", "Dublin", [("Cork", ""), ("Belfast", ""), ("London", "the United Kingdom")]),
    ("Portugal", "Lisbon", [("Porto", ""), ("Madrid", "Spain")]),
    ("the Netherlands", "Amsterdam", [("Rotterdam", ""), ("Brussels", "Belgium")]),
    ("Belgium", "Brussels", [("Antwerp", ""), ("Amsterdam", "the Netherlands"), ("Paris", "France")]),
    ("Switzerland", "Bern", [("Zurich", ""), ("Geneva", ""), ("Vienna", "Austria")]),
    ("Austria", "Vienna", [("Salzburg", ""), ("Budapest", "Hungary"), ("Bern", "Switzerland")]),
    ("Greece", "Athens", [("Thessaloniki", ""), ("Sofia", "Bulgaria")]),
    ("Turkey", "Ankara", [("Istanbul", ""), ("Izmir", ""), ("Athens", "Greece")]),
    ("Egypt", "Cairo", [("Alexandria", ""), ("Khartoum", "Sudan")]),
    ("Brazil", "Brasília", [("Rio de Janeiro", ""), ("São Paulo", ""), ("Buenos Aires", "Argentina")]),
    ("Argentina", "Buenos Aires", [("Córdoba", ""), ("Santiago", "Chile"), ("Montevideo", "Uruguay")]),
    ("Chile", "Santiago", [("Valparaíso", ""), ("Buenos Aires", "Argentina"), ("Lima", "Peru")]),
    ("Peru", "Lima", [("Cusco", ""), ("Quito", "Ecuador")]),
    ("Colombia", "Bogotá", [("Medellín", ""), ("Caracas", "Venezuela")]),
    ("Venezuela", "Caracas", [("Maracaibo", ""), ("Bogotá", "Colombia")]),
    ("Mexico", "Mexico City", [("Guadalajara", ""), ("Cancún", ""), ("Guatemala City", "Guatemala")]),
    ("the United States", "Washington, D.C.", [("New York City", ""), ("Los Angeles", ""),
                                               ("Mexico City", "Mexico")]),
    ("Kenya", "Nairobi", [("Mombasa", ""), ("Kampala", "Uganda")]),
    ("Nigeria", "Abuja", [("Lagos", ""), ("Accra", "Ghana")]),
    ("Ghana", "Accra", [("Kumasi", ""), ("Lomé", "Togo")]),
    ("Morocco", "Rabat", [("Casablanca", ""), ("Marrakesh", ""), ("Algiers", "Algeria")]),
    ("Ethiopia", "Addis Ababa", [("Dire Dawa", ""), ("Nairobi", "Kenya")]),
    ("Thailand", "Bangkok", [("Chiang Mai", ""), ("Phuket", ""), ("Phnom Penh", "Cambodia")]),
    ("Vietnam", "Hanoi", [("Ho Chi Minh City", ""), ("Vientiane", "Laos")]),
    ("South Korea", "Seoul", [("Busan", ""), ("Pyongyang", "North Korea"), ("Tokyo", "Japan")]),
    ("Pakistan", "Islamabad", [("Karachi", ""), ("Lahore", ""), ("New Delhi", "India")]),
    ("Sweden", "Stockholm", [("Gothenburg", ""), ("Oslo", "Norway")]),
    ("Norway", "Oslo", [("Bergen", ""), ("Stockholm", "Sweden")]),
    ("Denmark", "Copenhagen", [("Aarhus", ""), ("Stockholm", "Sweden")]),
    ("Finland", "Helsinki", [("Tampere", ""), ("Tallinn", "Estonia"), ("Stockholm", "Sweden")]),
    ("Poland", "Warsaw", [("Kraków", ""), ("Berlin", "Germany")]),
    ("the Czech Republic", "Prague", [("Brno", ""), ("Vienna", "Austria")]),
    ("Hungary", "Budapest", [("Debrecen", ""), ("Vienna", "Austria")]),
    ("New Zealand", "Wellington", [("Auckland", ""), ("Christchurch", "")]),
    ("Cuba", "Havana", [("Santiago de Cuba", ""), ("Kingston", "Jamaica")]),
    ("Jamaica", "Kingston", [("Montego Bay", ""), ("Havana", "Cuba")]),
    ("Iran", "Tehran", [("Isfahan", ""), ("Baghdad", "Iraq")]),
    ("Iraq", "Baghdad", [("Basra", ""), ("Tehran", "Iran")]),
    ("Saudi Arabia", "Riyadh", [("Jeddah", ""), ("Mecca", "")]),
    ("Ukraine", "Kyiv", [("Odesa", ""), ("Kharkiv", ""), ("Moscow", "Russia")]),
]

# element, symbol, similar wrong symbols (with what each one really is, or "")
ELEMENTS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("hydrogen", "H", [("Hy", ""), ("He", "helium")]),
    ("helium", "He", [("Hl", ""), ("H", "hydrogen")]),
    ("carbon", "C", [("Ca", "calcium"), ("Cr", "chromium")]),
    ("nitrogen", "N", [("Ni", "nickel"), ("Na", "sodium")]),
    ("oxygen", "O", [("Ox", ""), ("Os", "osmium")]),
    ("sodium", "Na", [("So", ""), ("S", "sulfur"), ("N", "nitrogen")]),
    ("potassium", "K", [("P", "phosphorus"), ("Po", "polonium"), ("Pt", "platinum")]),
    ("iron", "Fe", [("Ir", "iridium"), ("In", "indium"), ("I", "iodine")]),
    ("copper", "Cu", [("Co", "cobalt"), ("Cp", ""), ("Cr", "chromium")]),
    ("lead", "Pb", [("Ld", ""), ("Le", ""), ("L", "")]),
    ("calcium", "Ca", [("C", "carbon"), ("Cl", "chlorine"), ("Cm", "curium")]),
    ("chlorine", "Cl", [("Ch", ""), ("C", "carbon"), ("Cr", "chromium")]),
    ("magnesium", "Mg", [("Mn", "manganese"), ("Ma", ""), ("M", "")]),
    ("zinc", "Zn", [("Zi", ""), ("Z", ""), ("Zr", "zirconium")]),
    ("sulfur", "S", [("Su", ""), ("Sf", ""), ("Sr", "strontium")]),
    ("neon", "Ne", [("N", "nitrogen"), ("Na", "sodium"), ("Nn", "")]),
    ("tin", "Sn", [("Ti", "titanium"), ("T", ""), ("Tn", "")]),
    ("mercury", "Hg", [("Me", ""), ("Mr", ""), ("Mc", "moscovium")]),
    ("phosphorus", "P", [("Ph", ""), ("Po", "polonium"), ("K", "potassium")]),
    ("silicon", "Si", [("S", "sulfur"), ("Sl", ""), ("Sc", "scandium")]),
    ("aluminium", "Al", [("Am", "americium"), ("A", ""), ("Alu", "")]),
    ("uranium", "U", [("Ur", ""), ("Un", ""), ("Ua", "")]),
    ("lithium", "Li", [("L", ""), ("Lt", ""), ("Lh", "")]),
    ("fluorine", "F", [("Fl", "flerovium"), ("Fr", "francium"), ("Fe", "iron")]),
]

# (article, animal, legs, wings or None)
ANIMALS: list[tuple[str, str, int, int | None]] = [
    ("a", "spider", 8, None), ("a", "scorpion", 8, None), ("an", "ant", 6, None), ("a", "beetle", 6, None),
    ("a", "butterfly", 6, 4), ("a", "dragonfly", 6, 4), ("a", "honeybee", 6, 4), ("a", "housefly", 6, 2),
    ("a", "mosquito", 6, 2), ("a", "wasp", 6, 4), ("a", "dog", 4, None), ("a", "cat", 4, None),
    ("a", "horse", 4, None), ("a", "cow", 4, None), ("an", "elephant", 4, None), ("a", "giraffe", 4, None),
    ("a", "chicken", 2, 2), ("a", "duck", 2, 2), ("an", "ostrich", 2, 2), ("a", "penguin", 2, 2),
    ("an", "owl", 2, 2), ("a", "sparrow", 2, 2), ("a", "bat", 2, 2), ("a", "frog", 4, None),
]
_LEG_MISSES = {8: [(6, "the count for insects"), (10, "")], 6: [(8, "the count for spiders"), (4, "")],
               4: [(2, ""), (6, "the count for insects")], 2: [(4, ""), (3, "")]}
_WING_MISSES = {4: [(2, ""), (6, "")], 2: [(4, ""), (1, "")]}

# paint mixing (the painter's primaries red, yellow and blue): pair -> result, plausible wrong results
PAINT: list[tuple[str, str, str, list[str]]] = [
    ("red", "yellow", "orange", ["brown", "pink", "green"]),
    ("blue", "yellow", "green", ["purple", "orange", "brown"]),
    ("red", "blue", "purple", ["green", "orange", "brown"]),
]

# word, opposite, words close in meaning to the word (not opposites)
OPPOSITES: list[tuple[str, str, list[str]]] = [
    ("hot", "cold", ["warm", "spicy"]), ("tall", "short", ["high", "lofty"]), ("full", "empty", ["packed", "filled"]),
    ("early", "late", ["soon", "prompt"]), ("wet", "dry", ["damp", "soaked"]), ("fast", "slow", ["quick", "rapid"]),
    ("happy", "sad", ["glad", "cheerful"]), ("rich", "poor", ["wealthy", "affluent"]),
    ("young", "old", ["youthful", "juvenile"]), ("thick", "thin", ["dense", "wide"]),
    ("loud", "quiet", ["noisy", "booming"]), ("push", "pull", ["shove", "press"]), ("win", "lose", ["triumph", "succeed"]),
    ("buy", "sell", ["purchase", "acquire"]), ("above", "below", ["over", "atop"]),
    ("inside", "outside", ["within", "indoors"]), ("day", "night", ["daytime", "morning"]),
    ("north", "south", ["northern", "upward"]), ("east", "west", ["eastern", "orient"]),
    ("before", "after", ["earlier", "prior"]), ("entrance", "exit", ["entry", "doorway"]),
    ("awake", "asleep", ["alert", "conscious"]), ("true", "false", ["correct", "accurate"]),
    ("narrow", "wide", ["slim", "tight"]), ("deep", "shallow", ["profound", "bottomless"]),
    ("minimum", "maximum", ["least", "lowest"]), ("increase", "decrease", ["grow", "raise"]),
    ("always", "never", ["forever", "constantly"]), ("friend", "enemy", ["ally", "companion"]),
    ("strong", "weak", ["powerful", "sturdy"]), ("cheap", "expensive", ["inexpensive", "affordable"]),
    ("clean", "dirty", ["tidy", "spotless"]), ("smooth", "rough", ["sleek", "even"]),
    ("ancient", "modern", ["old", "antique"]), ("victory", "defeat", ["win", "triumph"]),
    ("arrive", "depart", ["reach", "land"]), ("generous", "stingy", ["giving", "charitable"]),
]

_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]

# keys, question, noun phrase, answer, sentence, misses (wrong, note) — everyday facts with one accepted answer
MISC: list[tuple[tuple[str, ...], str, str, str, str, list[tuple[str, str]]]] = [
    (("hexagon",), "How many sides does a hexagon have?", "the number of sides of a hexagon", "6",
     "A hexagon has {x} sides.", [("8", "says 8, the sides of an octagon; a hexagon has 6"),
                                  ("5", "says 5, the sides of a pentagon; a hexagon has 6")]),
    (("octagon",), "How many sides does an octagon have?", "the number of sides of an octagon", "8",
     "An octagon has {x} sides.", [("6", "says 6, the sides of a hexagon; an octagon has 8"),
                                   ("10", "says 10, but an octagon has 8 sides")]),
    (("pentagon",), "How many sides does a pentagon have?", "the number of sides of a pentagon", "5",
     "A pentagon has {x} sides.", [("6", "says 6, the sides of a hexagon; a pentagon has 5"),
                                   ("4", "says 4, but a pentagon has 5 sides")]),
    (("rainbow", "colours"), "How many colours are in a rainbow?", "the number of colours in a rainbow", "7",
     "A rainbow has {x} colours.", [("6", "says 6, but a rainbow is traditionally counted as 7 colours"),
                                    ("5", "says 5, but a rainbow is traditionally counted as 7 colours")]),
    (("cards", "deck"), "How many cards are in a standard deck without jokers?",
     "the number of cards in a standard deck without jokers", "52", "A standard deck has {x} cards.",
     [("54", "says 54, which counts the two jokers the question excludes"), ("48", "says 48, but a deck has 52")]),
    (("letters", "alphabet"), "How many letters are in the English alphabet?",
     "the number of letters in the English alphabet", "26", "The English alphabet has {x} letters.",
     [("24", "says 24, but the English alphabet has 26 letters"), ("28", "says 28, but the alphabet has 26")]),
    (("strings", "guitar"), "How many strings does a standard guitar have?",
     "the number of strings on a standard guitar", "6", "A standard guitar has {x} strings.",
     [("4", "says 4, the count for a bass guitar; a standard guitar has 6"), ("5", "says 5, but a guitar has 6")]),
    (("keys", "piano"), "How many keys does a standard piano have?", "the number of keys on a standard piano",
     "88", "A standard piano has {x} keys.", [("86", "says 86, but a standard piano has 88 keys"),
                                              ("76", "says 76, but a standard piano has 88 keys")]),
    (("players", "football"), "How many players does one football (soccer) team have on the pitch?",
     "the number of players one football (soccer) team has on the pitch", "11",
     "One football team has {x} players on the pitch.", [("10", "says 10, but a football team fields 11"),
                                                         ("12", "says 12, but a football team fields 11")]),
    (("ocean", "largest"), "What is the largest ocean on Earth?", "the largest ocean on Earth", "Pacific",
     "The largest ocean is the {x} Ocean.", [("Atlantic", "names the Atlantic, which is smaller than the Pacific"),
                                             ("Indian", "names the Indian Ocean, which is smaller than the Pacific")]),
    (("mountain", "highest"), "What is the highest mountain in the world?", "the highest mountain in the world",
     "Everest", "The highest mountain is Mount {x}.", [("K2", "names K2, which is lower than Everest"),
                                                       ("Kilimanjaro", "names Kilimanjaro, far lower than Everest")]),
    (("planet", "largest"), "Which planet in our solar system is the largest?",
     "the largest planet in our solar system", "Jupiter", "The largest planet is {x}.",
     [("Saturn", "names Saturn, which is smaller than Jupiter"), ("Neptune", "names Neptune, far smaller than Jupiter")]),
    (("planet", "red"), "Which planet is known as the Red Planet?", "the planet known as the Red Planet", "Mars",
     "The Red Planet is {x}.", [("Venus", "names Venus, but the Red Planet is Mars"),
                                ("Jupiter", "names Jupiter, but the Red Planet is Mars")]),
    (("planet", "hottest"), "Which planet has the hottest surface?", "the planet with the hottest surface", "Venus",
     "The planet with the hottest surface is {x}.",
     [("Mercury", "names Mercury, which is closer to the sun but cooler than Venus"),
      ("Mars", "names Mars, which is far colder than Venus")]),
    (("planets", "solar"), "How many planets are in our solar system?", "the number of planets in our solar system",
     "8", "Our solar system has {x} planets.", [("9", "says 9, which counts Pluto, no longer classed as a planet"),
                                                ("7", "says 7, but the solar system has 8 planets")]),
    (("gas", "plants"), "Which gas do plants take in from the air for photosynthesis?",
     "the gas plants take in from the air for photosynthesis", "carbon dioxide",
     "Plants take in {x} for photosynthesis.", [("oxygen", "names oxygen, which plants give off; they take in "
                                                 "carbon dioxide"), ("nitrogen", "names nitrogen, but plants take "
                                                                     "in carbon dioxide")]),
    (("Mona", "Lisa"), "Who painted the Mona Lisa?", "the painter of the Mona Lisa", "Leonardo da Vinci",
     "The Mona Lisa was painted by {x}.", [("Michelangelo", "names Michelangelo, but Leonardo painted the Mona Lisa"),
                                           ("Raphael", "names Raphael, but Leonardo painted the Mona Lisa")]),
    (("Romeo", "Juliet"), "Who wrote Romeo and Juliet?", "the author of Romeo and Juliet", "Shakespeare",
     "Romeo and Juliet was written by William {x}.",
     [("Marlowe", "names Marlowe, but Shakespeare wrote Romeo and Juliet"),
      ("Dickens", "names Dickens, but Shakespeare wrote Romeo and Juliet")]),
    (("fastest", "land"), "What is the fastest land animal?", "the fastest land animal", "cheetah",
     "The fastest land animal is the {x}.", [("lion", "names the lion, which is slower than the cheetah"),
                                             ("horse", "names the horse, which is slower than the cheetah")]),
    (("largest", "mammal"), "What is the largest mammal?", "the largest mammal", "blue whale",
     "The largest mammal is the {x}.", [("African elephant", "names the African elephant, far smaller than the blue "
                                         "whale"), ("sperm whale", "names the sperm whale, smaller than the blue whale")]),
    (("tallest", "animal"), "What is the tallest animal?", "the tallest animal", "giraffe",
     "The tallest animal is the {x}.", [("elephant", "names the elephant, which is shorter than the giraffe"),
                                        ("ostrich", "names the ostrich, far shorter than the giraffe")]),
    (("organ", "blood"), "Which organ pumps blood around the body?", "the organ that pumps blood around the body",
     "heart", "The organ that pumps blood is the {x}.", [("lungs", "names the lungs, but the heart pumps blood"),
                                                         ("liver", "names the liver, but the heart pumps blood")]),
    (("currency", "Japan"), "What is the currency of Japan?", "the currency of Japan", "yen",
     "The currency of Japan is the {x}.", [("yuan", "names the yuan, China's currency; Japan uses the yen"),
                                           ("won", "names the won, Korea's currency; Japan uses the yen")]),
    (("largest", "country"), "Which is the largest country by area?", "the largest country by area", "Russia",
     "The largest country by area is {x}.", [("China", "names China, which is smaller than Russia"),
                                             ("Brazil", "names Brazil, far smaller than Russia")]),
    (("prime", "smallest"), "What is the smallest prime number?", "the smallest prime number", "2",
     "The smallest prime number is {x}.", [("1", "says 1, which is not a prime; the smallest prime is 2"),
                                           ("3", "says 3, but 2 is a smaller prime")]),
    (("leap", "days"), "How many days are in a leap year?", "the number of days in a leap year", "366",
     "A leap year has {x} days.", [("365", "says 365, the days in a common year; a leap year has 366"),
                                   ("364", "says 364, but a leap year has 366 days")]),
    (("weeks", "year"), "About how many weeks are in a year?", "the number of whole weeks in a year", "52",
     "A year has {x} whole weeks.", [("48", "says 48, but a year has 52 whole weeks"),
                                     ("50", "says 50, but a year has 52 whole weeks")]),
    (("water", "Fahrenheit"), "At what temperature in Fahrenheit does water freeze?",
     "the temperature in Fahrenheit at which water freezes", "32",
     "Water freezes at {x} degrees Fahrenheit.", [("0", "says 0, the Celsius value; in Fahrenheit water freezes at 32"),
                                                  ("30", "says 30, but water freezes at 32 degrees Fahrenheit")]),
    (("water", "Celsius"), "At what temperature in Celsius does water freeze?",
     "the temperature in Celsius at which water freezes", "0",
     "Water freezes at {x} degrees Celsius.", [("32", "says 32, the Fahrenheit value; in Celsius water freezes at 0"),
                                               ("4", "says 4, but water freezes at 0 degrees Celsius")]),
]


def _capital(rng: random.Random) -> Fact:
    country, capital, near = rng.choice(CAPITALS)
    bare = country[4:] if country.startswith("the ") else country
    misses = tuple((city, f"names {city}, the capital of {of}, not of {country}" if of else
                    f"names {city}, but the capital of {country} is {capital}") for city, of in near)
    q = rng.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?"])
    n = rng.choice([f"the capital of {country}", f"the capital city of {country}"])
    return Fact((bare, "capital"), q, n, capital, f"The capital of {country} is {{x}}.",
                rng.choice(["It is where the national government sits.", "It is the seat of the government.",
                            "That is where the parliament meets."]),
                f"names {capital}, the capital of {country}", misses, f"Names {capital} as the capital of {country}")


def _symbol(rng: random.Random) -> Fact:
    element, symbol, near = rng.choice(ELEMENTS)
    misses = tuple((s, f"gives {s}, which is {what}'s symbol; {element} is {symbol}" if what else
                    f"gives {s}, but the symbol for {element} is {symbol}") for s, what in near)
    q = rng.choice([f"What is the chemical symbol for {element}?", f"Which symbol stands for {element}?"])
    n = rng.choice([f"the chemical symbol for {element}", f"the symbol used for {element} in chemistry"])
    return Fact((element, "symbol"), q, n, symbol, f"The chemical symbol for {element} is {{x}}.",
                "That is how it appears on the periodic table.", f"gives {symbol}, the symbol for {element}",
                misses, f"Gives {symbol} as the symbol for {element}")


def _limbs(rng: random.Random) -> Fact:
    article, animal, legs, wings = rng.choice(ANIMALS)
    part = "wings" if wings is not None and rng.random() < 0.4 else "legs"
    value = wings if part == "wings" else legs
    assert value is not None
    near = (_WING_MISSES if part == "wings" else _LEG_MISSES)[value]
    misses = tuple((str(w), f"says {w}, {why}; {article} {animal} has {value} {part}" if why else
                    f"says {w}, but {article} {animal} has {value} {part}") for w, why in near)
    q = rng.choice([f"How many {part} does {article} {animal} have?", f"{article.capitalize()} {animal} has how many "
                    f"{part}?"])
    n = rng.choice([f"how many {part} {article} {animal} has", f"the number of {part} on {article} {animal}"])
    return Fact((animal, part), q, n, str(value), f"{article.capitalize()} {animal} has {{x}} {part}.",
                "That is true of every healthy adult.", f"says {article} {animal} has {value} {part}, which is right",
                misses, f"Gives {value} {part} for {article} {animal}")


def _paint(rng: random.Random) -> Fact:
    a, b, result, wrong = rng.choice(PAINT)
    if rng.random() < 0.5:
        a, b = b, a
    misses = tuple((w, f"names {w}, but {a} and {b} paint make {result}") for w in wrong)
    q = rng.choice([f"What colour do you get when you mix {a} and {b} paint?",
                    f"If I mix {a} paint with {b} paint, what colour comes out?"])
    n = rng.choice([f"the colour you get from mixing {a} and {b} paint", f"what colour {a} and {b} paint make"])
    return Fact((a, b, "paint"), q, n, result, f"Mixing {a} and {b} paint gives {{x}}.",
                "That is the standard result on the colour wheel.", f"names {result}, what {a} and {b} paint make",
                misses, f"Names {result} as the mix of {a} and {b}")


def _opposite(rng: random.Random) -> Fact:
    word, opp, close = rng.choice(OPPOSITES)
    other_word, other_opp, _ = rng.choice([o for o in OPPOSITES if o[0] != word and o[1] != opp and opp not in o[2]
                                           and o[1] not in close])
    misses = tuple([(c, f"gives {c}, which is close in meaning to {word}, not its opposite") for c in close]
                   + [(other_opp, f"gives {other_opp}, the opposite of {other_word}, not of {word}")])
    q = rng.choice([f"What is the opposite of '{word}'?", f"Which word means the opposite of '{word}'?"])
    n = rng.choice([f"the opposite of the word '{word}'", f"a word meaning the opposite of '{word}'"])
    return Fact((word, "opposite"), q, n, opp, f"The opposite of {word} is {{x}}.",
                "The two words mean contrary things.", f"gives {opp}, the opposite of {word}", misses,
                f"Gives {opp} as the opposite of {word}")


def _planet(rng: random.Random) -> Fact:
    i = rng.randrange(8)
    ordinal, planet = _ORDINALS[i], PLANETS[i]
    near = [j for j in (i + 1, i - 1, i + 2, i - 2) if 0 <= j < 8][:3]
    misses = tuple((PLANETS[j], f"names {PLANETS[j]}, planet {j + 1} from the sun; planet {i + 1} is {planet}")
                   for j in near)
    q = rng.choice([f"Which planet is {ordinal} from the sun?", f"What is the {ordinal} planet from the sun?"])
    n = rng.choice([f"the {ordinal} planet from the sun", f"the planet that is {ordinal} in order from the sun"])
    return Fact((ordinal, "planet"), q, n, planet, f"{{x}} is the {ordinal} planet from the sun.",
                "That follows the order of the planets outward from the sun.",
                f"names {planet}, planet {i + 1} from the sun", misses, f"Names {planet} as planet {i + 1} from the sun")


def _misc(rng: random.Random) -> Fact:
    keys, q, n, answer, say, misses = rng.choice(MISC)
    return Fact(keys, q, n, answer, say, "This is well established and easy to check.",
                f"gives {answer}, which is correct", tuple(misses), f"Gives {answer} as {n}")


_KINDS: list[Callable[[random.Random], Fact]] = [_capital, _capital, _symbol, _limbs, _paint, _opposite, _planet,
                                                 _misc, _misc]


def world_fact_table() -> list[tuple[tuple[str, ...], str, list[str]]]:
    """Every world fact as (keys its prompts hold, answer, wrong answers): what the tests check drafts against."""
    out = []
    for country, capital, near in CAPITALS:
        out.append(((country[4:] if country.startswith("the ") else country, "capital"), capital, [c for c, _ in near]))
    out += [((element, "symbol"), symbol, [s for s, _ in near]) for element, symbol, near in ELEMENTS]
    for _, animal, legs, wings in ANIMALS:
        out.append(((animal, "legs"), str(legs), [str(w) for w, _ in _LEG_MISSES[legs]]))
        if wings is not None:
            out.append(((animal, "wings"), str(wings), [str(w) for w, _ in _WING_MISSES[wings]]))
    out += [((a, b, "paint"), result, wrong) for a, b, result, wrong in PAINT]
    out += [((word, "opposite"), opp, close + [o for _, o, _ in OPPOSITES if o != opp]) for word, opp, close in OPPOSITES]
    out += [((_ORDINALS[i], "planet"), PLANETS[i], [p for p in PLANETS if p != PLANETS[i]]) for i in range(8)]
    out += [(keys, answer, [m for m, _ in misses]) for keys, _, _, answer, _, misses in MISC]
    return out


# ------------------------------------------------------------------------------------------------- shared shapes


@dataclass(frozen=True)
class _Item:
    """What the templates render: question, noun phrase, answer, sentence with a slot, evidence for each answer."""

    q: str
    n: str
    answer: str
    say: str
    why: Callable[[str], str]  # a confident explanation that fits any answer
    right: str
    misses: tuple[tuple[str, str], ...]
    criterion: str
    rationale: str


def _render(rng: random.Random, template: int, item: _Item, system: str) -> Draft:
    """The six surface forms shared by both families; in templates 3 and 5 the wrong responses are longer and more
    confident than the right one."""
    lead = rng.choice(_LEADS)
    q, n = item.q, item.n
    prompt: Prompt = [f"{lead}{q}",
                      f"{lead}Please tell me {n}.",
                      f"{lead}{q} Explain your answer briefly.",
                      f"{lead}I need {n}. What is it?",
                      f"{lead}{q} Keep it friendly.",
                      [{"role": "system", "content": system}, {"role": "user", "content": f"{lead}{q}".strip()}]
                      ][template]
    opening, closing = rng.choice(_PAD_OPEN), rng.choice(_PAD_CLOSE)
    sure = rng.choice(_CONFIDENT)

    def shape(x: str, best: bool) -> str:
        sentence = item.say.format(x=x)
        if template == 0:
            return x
        if template == 1:
            return sentence
        if template == 2:
            return f"{sentence} {item.why(x)}"
        if template == 3:
            return x + "." if best else f"{sentence} {item.why(x)} {sure}"
        if template == 4:
            return f"{opening}{sentence}{closing}"
        return sentence if best else f"Definitely {x}. {sentence} {item.why(x)} {sure}"

    misses = [(w, note) for w, note in item.misses if w != item.answer][:3]
    responses = [shape(item.answer, True)] + [shape(w, False) for w, _ in misses]
    best_grade = rng.choice([8, 9]) if template == 4 else rng.choice([9, 10])
    grades = [best_grade] + [rng.choice([1, 2]) if template in (3, 5) else rng.choice([1, 2, 3]) for _ in misses]
    criteria = [(item.criterion, 80), ("Answers directly without padding or unearned confidence", 20)]
    if template == 4:
        criteria = [(item.criterion, 85), ("Answers clearly and politely", 15)]
    return Draft(prompt=prompt, responses=responses, notes=[item.right] + [note for _, note in misses],
                 grades=grades, criteria=criteria, rationale=item.rationale)


# -------------------------------------------------------------------------------------------------- world_facts


@family("world_facts", "knowledge", templates=6)
def world_facts(rng: random.Random, template: int) -> Draft:
    """Everyday facts a judge should know without a reference: capitals, chemical symbols, animals' legs and wings,
    paint mixing, opposites, the planets, common numbers; misses are the usual confusions."""
    fact = rng.choice(_KINDS)(rng)
    item = _Item(fact.q, fact.n, fact.answer, fact.say, lambda x, why=fact.why: why, fact.right, fact.misses,
                 fact.criterion, f"it is the only response that {fact.criterion[0].lower()}{fact.criterion[1:]}")
    return _render(rng, template, item, "You answer general-knowledge questions in one short sentence.")


# ------------------------------------------------------------------------------------------------ calendar_units

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
# (from unit, to unit, factor to multiply by, a wrong factor people use instead)
CONVERSIONS: list[tuple[str, str, int, int]] = [
    ("metres", "centimetres", 100, 10), ("kilometres", "metres", 1000, 100), ("kilograms", "grams", 1000, 100),
    ("hours", "minutes", 60, 100), ("minutes", "seconds", 60, 100), ("days", "hours", 24, 12),
    ("weeks", "days", 7, 5), ("centimetres", "millimetres", 10, 100),
]
_SINGULAR = {"metres": "metre", "centimetres": "centimetre", "kilometres": "kilometre", "kilograms": "kilogram",
             "grams": "gram", "hours": "hour", "minutes": "minute", "seconds": "second", "days": "day",
             "weeks": "week", "millimetres": "millimetre"}
WORDS = ["garden", "pencil", "window", "rabbit", "candle", "bridge", "orange", "planet", "guitar", "kitten",
         "basket", "forest", "marble", "pocket", "ladder", "jacket", "button", "island", "dragon",
         "blanket", "kitchen", "lantern", "picture", "teacher", "morning", "rainbow", "pumpkin", "blossom",
         "balloon", "sandwich", "elephant", "mountain", "umbrella", "notebook", "tomorrow", "painting",
         "dinosaur", "hospital", "calendar", "butterfly", "adventure", "telephone", "chocolate", "pineapple",
         "newspaper", "crocodile", "education", "breakfast", "apple", "tiger", "cloud", "river", "house", "chair",
         "bread", "light", "music", "table", "dog", "cat", "sun", "ocean", "moon", "tree", "book", "lemon",
         "cherry", "banana", "giraffe", "octopus", "volcano", "penguin", "library", "mushroom"]


def _fmt(value: Fraction) -> str:
    """A fraction with a terminating decimal expansion, written plainly (3, 0.45, 12.5)."""
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.4f}".rstrip("0").rstrip(".")
    if Fraction(text) != value:
        raise ValueError(f"{value} has no short decimal form")
    return text


def _weekday(rng: random.Random) -> _Item:
    while True:
        start, days, back = rng.randrange(7), rng.randint(2, 40), rng.random() < 0.3
        if days % 7 and not (start == 0 and days == 10):
            break
    step = -days if back else days
    answer = WEEKDAYS[(start + step) % 7]
    w = WEEKDAYS[start]
    word, sign = ("before", "-") if back else ("after", "+")
    calc = f"{w} {sign} {days} days is {answer}"
    misses = tuple((WEEKDAYS[(start + step + d) % 7], f"says {WEEKDAYS[(start + step + d) % 7]}, but {calc}")
                   for d in (1, -1, 2))
    if rng.random() < 0.5:
        q = f"What day of the week is {days} days {word} a {w}?"
    else:
        q = f"If today is {w}, what day was it {days} days ago?" if back else \
            f"If today is {w}, what day will it be {days} days from now?"
    weeks, rest = divmod(days, 7)
    move = "back" if back else "on"
    return _Item(q, f"the weekday {days} days {word} a {w}", answer, f"{days} days {word} {w} is {{x}}.",
                 lambda x: f"{days} days is {weeks} whole weeks and {rest} more, so counting {move} {rest} lands on "
                 f"{x}.", f"computes {calc}", misses, f"Computes {calc}", f"it is the only response consistent with {calc}")


def _month_days(rng: random.Random) -> _Item:
    month, year = rng.randint(1, 12), rng.randint(2019, 2032)
    days = calendar.monthrange(year, month)[1]
    name = MONTHS[month - 1]
    if month == 2:
        why = f" since {year} is {'a' if calendar.isleap(year) else 'not a'} leap year"
        near = [57 - days, 30, 31]  # 28 <-> 29
    else:
        why = ""
        near = [61 - days, 28, 29]  # 30 <-> 31
    misses = tuple((str(d), f"says {d}, but {name} {year} has {days} days{why}") for d in near)
    q = rng.choice([f"How many days are there in {name} {year}?", f"How many days does {name} {year} have?"])
    return _Item(q, f"the number of days in {name} {year}", str(days), f"{name} {year} has {{x}} days.",
                 lambda x: f"Counting from the 1st, the last day of {name} {year} is day {x}.",
                 f"gives {days}, the days in {name} {year}{why}", misses, f"Gives {days} days for {name} {year}",
                 f"it is the only response with the right count of {days} days for {name} {year}")


def _convert_once(rng: random.Random) -> _Item:
    src, dst, factor, wrong = rng.choice(CONVERSIONS)
    reverse = rng.random() < 0.35
    if rng.random() < 0.7:
        small = Fraction(rng.randint(2, 48))
    else:
        small = Fraction(rng.randint(11, 99), 10)  # one decimal place: 1.1 .. 9.9
    big = small * factor
    value, result = (big, small) if reverse else (small, big)
    frm, to = (dst, src) if reverse else (src, dst)
    v, r = _fmt(value), _fmt(result)
    op = "÷" if reverse else "×"
    calc = f"{v} {frm} {op} {factor} = {r} {to}"
    wrong_result = value / wrong if reverse else value * wrong
    step = Fraction(1, 10) if result.denominator > 1 else Fraction(rng.choice([-10, 10] if result > 20 else [-1, 1]))
    misses: list[tuple[str, str]] = []
    for miss, why in [(result + step, "near"), (wrong_result, "factor"), (result * 10, "ten"),
                      (result / 10, "ten")]:
        if miss == result or miss <= 0:
            continue
        try:
            text = _fmt(miss)
        except ValueError:
            continue
        if text in [m for m, _ in misses]:
            continue
        note = f"uses {wrong} instead of {factor} {dst} per {_SINGULAR[src]}; {calc}" if why == "factor" else \
            f"says {text} {to}, but {calc}"
        misses.append((text, note))
    q = rng.choice([f"How many {to} are in {v} {frm}?", f"Convert {v} {frm} to {to}."])
    one = f"1 {_SINGULAR[src]} is {factor} {dst}"
    return _Item(q, f"{v} {frm} expressed in {to}", r, f"{v} {frm} is {{x}} {to}.",
                 lambda x: f"Since {one}, the result is {x}.", f"computes {calc}", tuple(misses[:3]),
                 f"Computes {calc}", f"it is the only response consistent with {calc}")


def _convert(rng: random.Random) -> _Item:
    """A conversion whose values stay clear of the factor itself and of 2.5 metres (kept for evaluation)."""
    while True:
        item = _convert_once(rng)
        texts = [item.say.format(x=x) + item.why(x) for x in [item.answer] + [m for m, _ in item.misses]]
        if item.answer not in ("1", "7", "10", "24", "60", "100", "1000") and len(item.misses) >= 2 and \
                not any(re.search(r"(?<![\d.])2\.5 metres|(?<![\d.])250 centimetres", t) for t in texts):
            return item


def _letters(rng: random.Random) -> _Item:
    word = rng.choice(WORDS)
    count = len(word)
    spelled = "-".join(word)
    misses = tuple((str(count + d), f"says {count + d}, but {word} is {spelled}, {count} letters") for d in (1, -1, 2))
    q = rng.choice([f"How many letters are in the word '{word}'?", f"Count the letters in '{word}'."])
    return _Item(q, f"the number of letters in the word '{word}'", str(count),
                 f"The word '{word}' has {{x}} letters.", lambda x: f"Counting each letter of '{word}' gives {x}.",
                 f"counts {word} as {spelled}, {count} letters", misses, f"Counts {count} letters in '{word}'",
                 f"it is the only response with the right count of {count} letters")


def _months_after(rng: random.Random) -> _Item:
    start, n = rng.randrange(12), rng.choice([k for k in range(2, 21) if k != 12])
    answer = MONTHS[(start + n) % 12]
    calc = f"{MONTHS[start]} + {n} months is {answer}"
    misses = tuple((MONTHS[(start + n + d) % 12], f"says {MONTHS[(start + n + d) % 12]}, but {calc}")
                   for d in (1, -1, 2))
    q = rng.choice([f"Which month comes {n} months after {MONTHS[start]}?",
                    f"What month is it {n} months after {MONTHS[start]}?"])
    return _Item(q, f"the month {n} months after {MONTHS[start]}", answer,
                 f"{n} months after {MONTHS[start]} is {{x}}.",
                 lambda x: f"Counting {n} months on from {MONTHS[start]} lands on {x}.", f"computes {calc}", misses,
                 f"Computes {calc}", f"it is the only response consistent with {calc}")


_CALC_KINDS: list[Callable[[random.Random], _Item]] = [_weekday, _weekday, _month_days, _convert, _convert,
                                                       _letters, _months_after]


@family("calendar_units", "knowledge", templates=6)
def calendar_units(rng: random.Random, template: int) -> Draft:
    """Everyday facts the judge must compute itself: a weekday N days on, days in a month, metric and time unit
    conversions, letters in a word, a month N months on; misses are off by one or by a factor of ten."""
    item = _CALC_KINDS[rng.randrange(len(_CALC_KINDS))](rng)
    return _render(rng, template, item, "You answer everyday calendar and unit questions in one short sentence.")


__all__ = ["ANIMALS", "CAPITALS", "CONVERSIONS", "ELEMENTS", "MISC", "MONTHS", "OPPOSITES", "PAINT", "PLANETS",
           "WEEKDAYS", "WORDS", "calendar_units", "world_fact_table", "world_facts"]
