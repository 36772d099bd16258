"""Families where a response must obey an instruction constraint (length, count, keyword, case, punctuation,
format, language, opening or closing phrase), stated in the user text or in a system message.

Responses are built from a bank of short topic sentences written for this project (no commas, so that comma
rules can be broken on purpose). The best response answers the request and obeys the constraint; the near misses
answer it but break the constraint, and where possible one obeys the constraint but talks about another topic.
"""

from __future__ import annotations

import json
import random
import re

from .base import Draft, Prompt, family

_TOPICS: dict[str, list[str]] = {
    "green tea": ["Green tea is made from unroasted leaves.", "It has less caffeine than a cup of coffee.",
                  "The leaves are steamed or pan fired soon after picking to stop them from darkening.",
                  "Many people drink it without milk or sugar.", "Water that is too hot can make it taste bitter.",
                  "It is popular across East Asia."],
    "the moon": ["The moon orbits the Earth about once a month.", "Its surface is covered in dust and craters.",
                 "The moon has no air to breathe.", "Its gravity pulls on the oceans and causes the tides.",
                 "Astronauts first walked on the moon in 1969.",
                 "From Earth we always see the same side of the moon because it turns once for every orbit."],
    "bicycles": ["A bicycle turns leg power into motion.", "Gears let a rider climb hills with less effort.",
                 "Cycling to work saves money and keeps you fit.",
                 "Brakes and lights should be checked before a long ride.", "A helmet protects the head in a fall.",
                 "Many cities now have bike lanes that keep riders away from fast cars and busy junctions."],
    "honey bees": ["Honey bees live in large colonies.", "Each colony has one queen who lays the eggs.",
                   "Worker bees collect nectar and pollen from flowers.",
                   "Bees turn nectar into honey and store it in wax cells.",
                   "They help farmers by pollinating fruit and vegetable crops.",
                   "A bee dances in a special pattern to show the others where good flowers can be found."],
    "volcanoes": ["A volcano is an opening in the crust.", "Hot molten rock rises from deep below the surface.",
                  "Some volcanoes erupt with huge clouds of ash.", "Others release slow rivers of glowing lava.",
                  "Volcanic soil is often very rich for farming.",
                  "Scientists watch for small earthquakes and gas changes that can warn of an eruption days ahead."],
    "baking bread": ["Basic bread needs only flour and water with salt and yeast.", "Yeast makes the dough rise.",
                     "Kneading builds gluten and gives bread its chew.",
                     "The dough should rest in a warm place for an hour or two.",
                     "A hot oven creates a crisp golden crust.",
                     "Letting the loaf cool before slicing keeps the inside from turning gummy."],
    "rainforests": ["Rainforests get heavy rain almost every day.",
                    "They are home to more than half of all land species.",
                    "Tall trees form a thick canopy high above the ground.", "Little sunlight reaches the forest floor.",
                    "Many medicines were first found in rainforest plants.",
                    "Cutting down these forests releases carbon and destroys habitats that took thousands of years "
                    "to form."],
    "chess": ["Chess is played on a board of sixty four squares.", "Each player starts with sixteen pieces.",
              "The goal is to trap the opposing king.", "Knights move in an L shape and can jump over pieces.",
              "White always makes the first move.",
              "Strong players study openings and endgames to plan many moves ahead."],
    "recycling": ["Recycling turns used materials into new products.",
                  "Glass can be melted and reshaped again and again.",
                  "Paper fibres get shorter each time they are recycled.", "Clean and dry items are easier to process.",
                  "Recycling aluminium cans saves most of the energy needed to make new metal.",
                  "Sorting waste at home helps."],
    "sleep": ["Adults need about seven to nine hours of sleep.", "Sleep helps the brain store new memories.",
              "Screens before bed can make it harder to fall asleep.", "A dark and quiet room improves rest.",
              "Going to bed at the same time each night trains the body clock.", "Short naps can boost focus."],
    "the ocean": ["Oceans cover most of the surface of the Earth.",
                  "Seawater is salty because rivers carry minerals into it.",
                  "The deepest parts are completely dark and very cold.", "Ocean currents move heat around the planet.",
                  "Tiny plankton produce a large share of the oxygen we breathe.", "Waves are mostly made by wind."],
    "gardening": ["Plants need light and water and good soil.", "Compost adds food for plants back into the ground.",
                  "Watering early in the morning reduces loss to evaporation.",
                  "Weeds compete with crops for space and nutrients.", "Tomatoes grow best in a warm sunny spot.",
                  "Rotating crops each year keeps the soil healthy and lowers the risk of pests building up."],
    "the piano": ["A piano has eighty eight keys.", "Pressing a key makes a felt hammer strike a string.",
                  "The pedals can sustain or soften the sound.", "Pianos need tuning once or twice a year.",
                  "Beginners often start with simple scales.",
                  "Regular short practice sessions usually work better than one long session at the end of the week."],
    "camping": ["A good tent keeps you dry at night.", "Pack layers because evenings can get cold.",
                "Always carry enough water for the trip.", "Campfires should be fully put out before you leave.",
                "Store food away from the tent to avoid animals.",
                "Choosing flat ground without rocks or roots makes sleeping far more comfortable."],
    "coffee": ["Coffee comes from roasted seeds of a berry.", "Darker roasts taste more bitter and smoky.",
               "Caffeine can keep people awake and alert.", "Fresh ground beans give the best flavour.",
               "Espresso is made by forcing hot water through fine grounds.", "Many people enjoy coffee."],
    "dinosaurs": ["Dinosaurs lived for over one hundred and sixty million years.", "Some were as small as chickens.",
                  "Others grew longer than a city bus.", "Fossils show that many had feathers.",
                  "Birds are the living descendants of dinosaurs.",
                  "Most dinosaurs died out after a huge asteroid struck the Earth about sixty six million years ago."],
    "electric cars": ["Electric cars run on batteries instead of fuel.", "They make almost no noise at low speed.",
                      "Charging at home overnight is cheap for many owners.",
                      "Regenerative brakes recover energy when the car slows.",
                      "Cold weather can reduce the driving range.",
                      "Fast chargers along highways can refill most of a battery in under an hour."],
    "rainbows": ["Rainbows appear when sunlight passes through raindrops.",
                 "Each drop bends and splits the light into colours.", "Red is on the outside and violet on the inside.",
                 "You see a rainbow with the sun behind you.", "Sometimes a fainter second bow appears.",
                 "No two people see exactly the same rainbow."],
    "penguins": ["Penguins are birds that cannot fly.", "They use their wings as flippers to swim.",
                 "Most species live in the Southern Hemisphere.", "A thick layer of fat keeps them warm.",
                 "Emperor penguin fathers keep the egg warm on their feet for weeks.",
                 "Penguins often slide on their bellies across ice."],
    "public libraries": ["Libraries lend books for free.", "Many also offer computers and internet access.",
                         "Librarians help people find reliable information.",
                         "Reading hours for children build early literacy.",
                         "Quiet study rooms are popular during exam season.",
                         "Some libraries lend tools and musical instruments as well as books."],
    "running": ["Running strengthens the heart and lungs.", "Good shoes reduce the risk of injury.",
                "Beginners should build distance slowly.", "A short warm up prepares the muscles.",
                "Drinking water matters on hot days.",
                "Mixing easy runs with a few harder sessions each week helps runners improve without burning out."],
    "photography": ["A camera records light on a sensor.",
                    "The aperture controls how much light enters the lens.", "A fast shutter freezes motion.",
                    "Soft morning light flatters most subjects.", "The rule of thirds helps balance a picture.",
                    "Holding the camera steady or using a tripod prevents blurry shots in low light."],
    "deserts": ["Deserts receive very little rain each year.", "Days can be hot while nights turn cold.",
                "Cacti store water in their thick stems.", "Many desert animals are active only at night.",
                "Not every desert is sandy.",
                "Strong winds shape the sand into dunes that slowly move across the land over many years."],
    "kites": ["A kite flies when wind pushes against its surface.", "The string holds it at an angle to the breeze.",
              "A tail adds stability.", "Open fields away from power lines are the safest places to fly.",
              "Light fabric and thin rods keep a kite easy to lift.", "Kite festivals draw huge crowds."],
    "volunteering": ["Volunteering connects people with their community.",
                     "Food banks often need help sorting donations.", "Even one hour a week can make a difference.",
                     "Volunteers learn new skills while helping others.",
                     "Many charities run training for new helpers.",
                     "Giving time regularly can also lift your own mood and reduce feelings of loneliness."],
}
_PURPOSES = ["for a school poster", "for my notes", "for a quiz card", "for a newsletter", "for a ten year old",
             "for a museum label", "for a travel blog", "for a club flyer", "for a lesson plan", "for a podcast intro",
             "for a group chat", "for a science fair", "for my grandmother", "for a library display",
             "for a short radio spot", "for a website sidebar", "for a birthday card", "for a class handout",
             "for a scout troop", "for new neighbours", "for a shop window", "for a study group", "for my diary",
             "for a teacher", "for a comic strip caption", "for a town noticeboard", "for a family newsletter",
             "for a pen pal", "for a summer camp", "for a walking tour", "for a trivia night", "for a book club",
             "for a café menu", "for a holiday card", "for a youth club", "for a zine"]
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_STOP = {"about", "their", "there", "these", "other", "others", "which", "where", "after", "every", "often",
         "while", "before", "because", "could", "should", "since", "under", "almost", "instead", "always",
         "first", "second", "third", "response"}

Miss = tuple[str, str, int]  # (response, note, grade)


def _words(text: str) -> int:
    return len(text.split())


def _sentence_count(text: str) -> int:
    return len(re.findall(r"[.!?](?:\s|$)", text))


def _chat(system: str, user: str) -> Prompt:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _pick(rng: random.Random) -> tuple[str, list[str], str, list[str]]:
    """A topic, its sentences, a different topic and that topic's sentences."""
    topic, other = rng.sample(sorted(_TOPICS), 2)
    return topic, _TOPICS[topic], other, _TOPICS[other]


def _sample(sentences: list[str], k: int, rng: random.Random) -> list[str]:
    """``k`` sentences in their original order."""
    return [sentences[i] for i in sorted(rng.sample(range(len(sentences)), k))]


def _content_words(text: str) -> list[str]:
    return [w for w in dict.fromkeys(re.findall(r"[a-z]+", text.lower())) if len(w) >= 5 and w not in _STOP]


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None


def _draft(rng: random.Random, prompt: Prompt, best: tuple[str, str], misses: list[Miss],
           criteria: list[tuple[str, int]], rationale: str) -> Draft:
    """The best response graded 9-10, then up to three distinct misses with their own grades."""
    seen = {best[0]}
    kept = []
    for miss in misses:
        if miss[0] not in seen:
            seen.add(miss[0])
            kept.append(miss)
    kept = kept[:3]
    return Draft(prompt=prompt, responses=[best[0]] + [m[0] for m in kept], notes=[best[1]] + [m[1] for m in kept],
                 grades=[rng.choice([9, 10])] + [m[2] for m in kept], criteria=criteria, rationale=rationale)


def _bad(rng: random.Random) -> int:
    return rng.choice([1, 2, 3])


def _partial(rng: random.Random) -> int:
    return rng.choice([3, 4, 5])


# ---------------------------------------------------------------- word_count

@family("word_count", "constraint", templates=6)
def word_count(rng: random.Random, template: int) -> Draft:
    """Exactly N or at most N words; misses are clearly longer or shorter; one obeys but is off topic."""
    topic, sents, other, other_sents = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    best = rng.choice(sents)
    exact = template in (0, 2, 4)
    n = _words(best) if exact else _words(best) + rng.randint(0, 3)
    prompt = [f"In exactly {n} words, describe {topic} {purpose}.",
              f"Write at most {n} words about {topic} {purpose}.",
              _chat(f"Every reply must be exactly {n} words long.", f"Tell me about {topic} {purpose}."),
              _chat(f"Keep every answer to {n} words or fewer.", f"What should I know about {topic}? It is {purpose}."),
              f"Give me one line on {topic} {purpose}: exactly {_NUMBER_WORDS[n] if n <= 10 else n} words, "
              "no more and no fewer.",
              f"{purpose[0].upper() + purpose[1:]}, sum up {topic} in no more than {n} words."][template]
    rule = "exactly" if exact else "at most"
    rest = [s for s in sents if s != best]
    rng.shuffle(rest)
    longer = best + " " + " ".join(rest[:2] if _words(rest[0]) < 8 else rest[:1])
    misses: list[Miss] = []
    if exact:
        near = [s for s in rest if abs(_words(s) - n) >= 3]
        if near:
            s = min(near, key=lambda x: abs(_words(x) - n))
            side = "fewer" if _words(s) < n else "more"
            misses.append((s, f"has {_words(s)} words, {side} than the {n} asked for", _bad(rng)))
        misses.append((longer, f"has {_words(longer)} words, far more than the {n} asked for", _bad(rng)))
    else:
        misses.append((longer, f"has {_words(longer)} words, over the limit of {n}", _bad(rng)))
        alt = " ".join(rest[1:4])
        misses.append((alt, f"has {_words(alt)} words, far over the limit of {n}", _bad(rng)))
    fits = [s for s in other_sents if (_words(s) == n if exact else _words(s) <= n)]
    if fits:
        s = rng.choice(fits)
        misses.append((s, f"has {_words(s)} words, within the rule, but is about {other}, not {topic}",
                       _partial(rng)))
    count = _words(best)
    best_note = f"has {count} words, exactly the {n} asked for" if exact else \
        f"has {count} words, within the limit of {n}"
    return _draft(rng, prompt, (best, best_note), misses,
                  [(f"The reply must have {rule} {n} words", 70), (f"It must be about {topic}", 30)],
                  f"it is the only on-topic response with {rule} {n} words")


# ---------------------------------------------------------------- sentence_count

@family("sentence_count", "constraint", templates=6)
def sentence_count(rng: random.Random, template: int) -> Draft:
    """Exactly N sentences; misses have one or two more or fewer; one has N sentences on another topic."""
    topic, sents, other, other_sents = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    n = rng.randint(2, 4)
    joiner = "\n" if template == 4 else " "
    prompt = [f"Explain {topic} in exactly {n} sentences {purpose}.",
              _chat(f"Answer in exactly {n} sentences.", f"What is interesting about {topic}? It is {purpose}."),
              f"Write a paragraph of {n} sentences about {topic} {purpose}.",
              f"{n} sentences, please: tell me about {topic} {purpose}.",
              _chat(f"You write short blurbs {purpose}. Each blurb is exactly {n} sentences, one per line.",
                    f"Blurb topic: {topic}."),
              f"Describe {topic} {purpose}. Use {_NUMBER_WORDS[n]} sentences exactly."][template]
    best = joiner.join(_sample(sents, n, rng))
    more = joiner.join(_sample(sents, n + rng.choice([1, 2]), rng))
    fewer = joiner.join(_sample(sents, n - 1, rng))
    off = joiner.join(_sample(other_sents, n, rng))

    def diff(k: int) -> str:
        return f"has {k} sentences, {'one' if abs(k - n) == 1 else 'two'} {'more' if k > n else 'fewer'} " \
               f"than the {n} asked for"

    misses: list[Miss] = [(more, diff(_sentence_count(more)), _bad(rng)),
                          (fewer, diff(_sentence_count(fewer)), _bad(rng))]
    rng.shuffle(misses)
    misses.append((off, f"has {n} sentences as asked, but they are about {other}, not {topic}", _partial(rng)))
    return _draft(rng, prompt, (best, f"has exactly {n} sentences, all about {topic}"), misses,
                  [(f"The reply must have exactly {n} sentences", 70), (f"It must be about {topic}", 30)],
                  f"it is the only on-topic response with exactly {n} sentences")


# ---------------------------------------------------------------- list_items

_MARKERS = ["{i}. ", "- ", "{i}) ", "* ", "• ", "{i}. "]


@family("list_items", "constraint", templates=6)
def list_items(rng: random.Random, template: int) -> Draft:
    """A numbered or bulleted list of exactly N items; misses have N+1 or N-1 items or are a paragraph."""
    topic, sents, other, other_sents = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    n = rng.randint(3, 5)
    prompt = [f"List {n} facts about {topic} {purpose}. Number them.",
              f"Give me a bulleted list of exactly {n} points on {topic} {purpose}.",
              _chat(f"Format every answer as a numbered list of exactly {n} items.",
                    f"What matters about {topic}? It is {purpose}."),
              _chat(f"Reply with exactly {n} bullet points and nothing else.", f"Topic: {topic}, {purpose}."),
              f"I want {_NUMBER_WORDS[n]} bullet points about {topic} {purpose}.",
              f"Make a numbered list ({n} items) about {topic} {purpose}."][template]
    marker = _MARKERS[template]
    intro = f"Here are {n} points:\n" if template == 5 else ""

    def show(items: list[str]) -> str:
        return intro + "\n".join(marker.format(i=i + 1) + s for i, s in enumerate(items))

    best = _sample(sents, n, rng)
    more, fewer = _sample(sents, n + 1, rng), _sample(sents, n - 1, rng)
    misses: list[Miss] = [(show(more), f"lists {n + 1} items, one more than the {n} asked for", _bad(rng))]
    if template % 2 == 0:
        misses.append((show(fewer), f"lists {n - 1} items, one fewer than the {n} asked for", _bad(rng)))
    else:
        misses.append((" ".join(best), f"writes one paragraph, not a list of {n} items", _bad(rng)))
    rng.shuffle(misses)
    misses.append((show(_sample(other_sents, n, rng)), f"lists {n} items, but about {other}, not {topic}",
                   _partial(rng)))
    return _draft(rng, prompt, (show(best), f"lists exactly {n} items, all about {topic}"), misses,
                  [(f"The reply must be a list of exactly {n} items", 75), (f"Each item must be about {topic}", 25)],
                  f"it is the only on-topic list with exactly {n} items")


# ---------------------------------------------------------------- keyword_include and forbidden_word

def _split_by_word(sents: list[str], rng: random.Random, want_in_best: bool) -> tuple[str, list[str], list[str]]:
    """A word and two groups of two sentences: ``best`` lacks or holds the word (``want_in_best``), the rest the
    opposite where it matters (the rest never holds it when the word must be included)."""
    for _ in range(50):
        order = rng.sample(sents, len(sents))
        best, rest = order[:2], order[2:]
        source, avoid = (best, rest) if want_in_best else (rest, best)
        words = [w for w in _content_words(" ".join(source)) if not _has_word(" ".join(avoid), w)]
        if words:
            return rng.choice(words), best, rest
    raise RuntimeError("no distinguishing word")  # pragma: no cover (every topic has one)


@family("keyword_include", "constraint", templates=6)
def keyword_include(rng: random.Random, template: int) -> Draft:
    """The reply must include a given word; misses on the same topic never use it."""
    topic, sents, other, other_sents = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    kw, best, rest = _split_by_word(sents, rng, want_in_best=True)
    prompt = [f"Write two sentences about {topic} {purpose}. Include the word \"{kw}\".",
              _chat(f"Your reply must contain the word '{kw}'.", f"Tell me something about {topic}, {purpose}."),
              f"Mention '{kw}' somewhere in a short note about {topic} {purpose}.",
              f"Use the keyword {kw} in two sentences on {topic} {purpose}.",
              _chat(f"Always work the word \"{kw}\" into your answer.", f"A quick blurb on {topic} {purpose}, please."),
              f"Two sentences on {topic} {purpose}; the word '{kw}' has to appear."][template]
    joiner = "\n" if template == 5 else " "
    rng.shuffle(rest)
    misses: list[Miss] = [(joiner.join(rest[:2]), f"never uses the word '{kw}'", _bad(rng)),
                          (joiner.join(rest[2:]), f"never uses the word '{kw}'", _bad(rng)),
                          (f"I will use the word {kw} as asked. {rng.choice(other_sents)}",
                           f"uses '{kw}' but says nothing about {topic}", _partial(rng))]
    return _draft(rng, prompt, (joiner.join(best), f"uses the word '{kw}' as required and stays on {topic}"), misses,
                  [(f"The reply must include the word '{kw}'", 70), (f"It must be about {topic}", 30)],
                  f"it is the only on-topic response that uses the word '{kw}'")


@family("forbidden_word", "constraint", templates=6)
def forbidden_word(rng: random.Random, template: int) -> Draft:
    """The reply must not use a given word; the misses use it."""
    topic, sents, other, other_sents = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    fw, best, rest = _split_by_word(sents, rng, want_in_best=False)
    prompt = [f"Tell me about {topic} {purpose}, but do not use the word \"{fw}\".",
              _chat(f"Never use the word '{fw}' in your replies.", f"Two sentences on {topic} {purpose}, please."),
              f"Describe {topic} {purpose} without the word '{fw}'.",
              _chat(f"House style: the word \"{fw}\" is banned.", f"Write a short note on {topic} {purpose}."),
              f"Avoid saying {fw}. What can you tell me about {topic}? It is {purpose}.",
              f"Write about {topic} {purpose}; '{fw}' is off limits."][template]
    with_fw = [s for s in rest if _has_word(s, fw)]
    used = rng.choice(with_fw)
    others = [s for s in rest if s != used]
    off = [s for s in other_sents if not _has_word(s, fw)]
    misses: list[Miss] = [(f"{best[0]} {used}", f"uses the forbidden word '{fw}'", _bad(rng)),
                          (f"{used} {rng.choice(others)}", f"uses the forbidden word '{fw}'", _bad(rng))]
    if off:
        misses.append((" ".join(off[:2]), f"avoids '{fw}' but is about {other}, not {topic}", _partial(rng)))
    return _draft(rng, prompt, (" ".join(best), f"avoids the word '{fw}' entirely and stays on {topic}"), misses,
                  [(f"The reply must not contain the word '{fw}'", 70), (f"It must be about {topic}", 30)],
                  f"it is the only on-topic response that never uses the forbidden word '{fw}'")


# ---------------------------------------------------------------- letter_case

def _first_breaking(text: str, lower: bool) -> str:
    """The first word that breaks the case rule."""
    for word in text.split():
        if (lower and word != word.lower()) or (not lower and word != word.upper()):
            return word.strip(".!?")
    return ""


@family("letter_case", "constraint", templates=6)
def letter_case(rng: random.Random, template: int) -> Draft:
    """All lowercase or ALL CAPS; misses keep normal case, switch case halfway, or use the opposite case."""
    topic, sents, other, other_sents = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    lower = template in (0, 2, 4)
    prompt = [f"Write about {topic} {purpose} using only lowercase letters.",
              f"Reply in ALL CAPS: tell me about {topic} {purpose}.",
              _chat("Write everything in lowercase. No capital letters at all.", f"Explain {topic} {purpose}."),
              _chat("Every reply must be written entirely in capital letters.", f"Tell me about {topic} {purpose}."),
              f"no capitals please. two sentences on {topic} {purpose}.",
              f"{topic.upper()} {purpose.upper()}: ANSWER IN UPPERCASE ONLY."][template]
    case = str.lower if lower else str.upper
    name = "all lowercase" if lower else "all capitals"
    s1, s2 = _sample(sents, 2, rng)
    best = f"{case(s1)} {case(s2)}"
    normal, half = f"{s1} {s2}", f"{case(s1)} {s2}"
    flip = (str.upper if lower else str.lower)(normal)
    misses: list[Miss] = [(half, f"switches case midway: '{_first_breaking(half, lower)}' is not {name}", _bad(rng)),
                          (normal, f"uses normal case, e.g. '{_first_breaking(normal, lower)}', not {name}", _bad(rng)),
                          (flip, f"is written in {'capitals' if lower else 'lowercase'}, the opposite of {name}",
                           _bad(rng))]
    misses = [m for m in misses if _first_breaking(m[0], lower)]
    misses.insert(rng.randint(1, 2), (" ".join(case(s) for s in _sample(other_sents, 2, rng)),
                                      f"is {name} but about {other}, not {topic}", _partial(rng)))
    return _draft(rng, prompt, (best, f"is {name} throughout, as asked, and about {topic}"), misses,
                  [(f"The reply must be written in {name}", 75), (f"It must be about {topic}", 25)],
                  f"it is the only on-topic response written entirely in {name}")


# ---------------------------------------------------------------- punctuation

_QUESTIONS = ["Would you like to learn more about {t}?", "Have you ever thought about {t}?",
              "What do you find most interesting about {t}?", "Shall I tell you more about {t}?"]


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:]


@family("punctuation", "constraint", templates=6)
def punctuation(rng: random.Random, template: int) -> Draft:
    """No commas, end with an exclamation mark, or end with a question; misses break the rule."""
    topic, sents, other, other_sents = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    kind = ["comma", "exclaim", "question", "comma", "exclaim", "question"][template]
    prompt = [f"Tell me about {topic} {purpose}. Do not use any commas.",
              f"Write two sentences about {topic} {purpose} and end with an exclamation mark.",
              f"Say something about {topic} {purpose} and finish your reply with a question.",
              _chat("Never use commas in your replies.", f"What should I know about {topic}? It is {purpose}."),
              _chat("End every reply with an exclamation mark.", f"A short note on {topic} {purpose}, please."),
              _chat("Always close your reply by asking the user a question.", f"Talk about {topic} {purpose}.")
              ][template]
    s1, s2 = _sample(sents, 2, rng)
    o1, o2 = _sample(other_sents, 2, rng)
    if kind == "comma":
        best = f"{s1} {s2}"
        merged = f"{s1[:-1]}, and {_lower_first(s2)}"
        lead = f"In short, {_lower_first(s1)} {s2}"
        misses: list[Miss] = [(merged, f"uses a comma before 'and {_lower_first(s2).split()[0]}'", _bad(rng)),
                              (lead, "uses a comma after 'In short'", _bad(rng)),
                              (f"{o1} {o2}", f"has no commas but is about {other}, not {topic}", _partial(rng))]
        return _draft(rng, prompt, (best, f"contains no commas at all and is about {topic}"), misses,
                      [("The reply must contain no commas", 70), (f"It must be about {topic}", 30)],
                      "it is the only on-topic response with no commas")
    if kind == "exclaim":
        best = f"{s1} {s2[:-1]}!"
        misses = [(f"{s1} {s2}", "ends with a period, not an exclamation mark", _bad(rng)),
                  (f"{s1[:-1]}! {s2}", "has an exclamation mark in the middle but ends with a period", _bad(rng)),
                  (f"{o1} {o2[:-1]}!", f"ends with '!' but is about {other}, not {topic}", _partial(rng))]
        return _draft(rng, prompt, (best, f"ends with an exclamation mark, as asked, and is about {topic}"), misses,
                      [("The reply must end with an exclamation mark", 70), (f"It must be about {topic}", 30)],
                      "it is the only on-topic response that ends with an exclamation mark")
    q = rng.choice(_QUESTIONS)
    best = f"{s1} {s2} {q.format(t=topic)}"
    misses = [(f"{q.format(t=topic)} {s1} {s2}", "opens with its question and ends with a statement", _bad(rng)),
              (f"{s1} {s2}", "ends with a statement; it asks no question", _bad(rng)),
              (f"{o1} {o2} {q.format(t=other)}", f"ends with a question but is about {other}, not {topic}",
               _partial(rng))]
    return _draft(rng, prompt, (best, f"ends with the question '{q.format(t=topic)}'"), misses,
                  [("The reply must end with a question", 70), (f"It must be about {topic}", 30)],
                  "it is the only on-topic response that ends with a question")


# ---------------------------------------------------------------- json_format

def _values(topic: str, sents: list[str], purpose: str, rng: random.Random) -> dict[str, object]:
    facts = _sample(sents, 2, rng)
    return {"topic": topic, "fact": facts[0], "summary": facts[1], "audience": purpose[4:],
            "rating": rng.randint(1, 5), "tags": _content_words(" ".join(facts))[:2],
            "difficulty": rng.choice(["easy", "medium", "hard"])}


@family("json_format", "constraint", templates=6)
def json_format(rng: random.Random, template: int) -> Draft:
    """A valid JSON object with given keys; misses: invalid JSON, a missing key, prose around the object."""
    topic, sents, _, _ = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    pool = _values(topic, sents, purpose, rng)
    keys = rng.sample(sorted(pool), rng.randint(2, 3))
    listed = ", ".join(f"'{k}'" for k in keys[:-1]) + f" and '{keys[-1]}'"
    prompt = [f"Return a JSON object with the keys {listed} about {topic}.",
              _chat(f"Reply only with a valid JSON object containing the keys {listed}.", f"Topic: {topic}"),
              f"Give me JSON (keys: {', '.join(keys)}) describing {topic} {purpose}.",
              f"Output facts on {topic} as a JSON object with exactly these keys: {listed}. No other text.",
              _chat(f"You are an API. Answer with one JSON object that has the keys {listed}.",
                    f"Describe {topic} {purpose}."),
              f"Format your answer about {topic} as JSON with the fields {listed}."][template]
    indent = [None, 2, None, 2, 4, 1][template]
    obj = {k: pool[k] for k in keys}
    best = json.dumps(obj, indent=indent)
    dropped = rng.choice(keys)
    missing = json.dumps({k: v for k, v in obj.items() if k != dropped}, indent=indent)
    quoted = best.replace('"', "'")
    misses: list[Miss] = [(quoted, "uses single quotes, so it is not valid JSON", _bad(rng)),
                          (missing, f"is valid JSON but lacks the key '{dropped}'", _bad(rng)),
                          (f"Here is the JSON you asked for:\n{best}\nLet me know if you need more.",
                           "has the right keys but wraps the JSON in prose ('Here is the JSON')", _partial(rng))]
    rng.shuffle(misses)
    return _draft(rng, prompt, (best, f"is a valid JSON object with exactly the keys {listed}"), misses,
                  [("The reply must be a single valid JSON object", 50), (f"It must have the keys {listed}", 50)],
                  f"it is the only response that is bare valid JSON with every key {listed}")


# ---------------------------------------------------------------- language

_LANGS = ["English", "French", "Spanish", "German", "Italian", "Portuguese"]
_COLOURS = [("blue", "bleu", "azul", "Blau", "blu", "azul"), ("red", "rouge", "rojo", "Rot", "rosso", "vermelho"),
            ("green", "vert", "verde", "Grün", "verde", "verde"), ("yellow", "jaune", "amarillo", "Gelb", "giallo",
                                                                   "amarelo"),
            ("black", "noir", "negro", "Schwarz", "nero", "preto"), ("white", "blanc", "blanco", "Weiß", "bianco",
                                                                     "branco")]
_DAYS = [("Monday", "lundi", "lunes", "Montag", "lunedì", "segunda-feira"),
         ("Tuesday", "mardi", "martes", "Dienstag", "martedì", "terça-feira"),
         ("Wednesday", "mercredi", "miércoles", "Mittwoch", "mercoledì", "quarta-feira"),
         ("Thursday", "jeudi", "jueves", "Donnerstag", "giovedì", "quinta-feira"),
         ("Friday", "vendredi", "viernes", "Freitag", "venerdì", "sexta-feira")]
_NUMS = [("two", "deux", "dos", "zwei", "due", "dois"), ("three", "trois", "tres", "drei", "tre", "três"),
         ("four", "quatre", "cuatro", "vier", "quattro", "quatro"), ("five", "cinq", "cinco", "fünf", "cinque",
                                                                      "cinco")]
_PETS = [("cats", "chats", "gatos", "Katzen", "gatti", "gatos"), ("dogs", "chiens", "perros", "Hunde", "cani", "cães"),
         ("birds", "oiseaux", "pájaros", "Vögel", "uccelli", "pássaros")]
_NAMES = ["Lena", "Marco", "Sofia", "Tomas", "Irene", "Paulo", "Nina", "Hugo", "Clara", "Rafael", "Elsa", "Dario",
          "Ana", "Felix", "Lucia", "Oskar"]
_FRAMES = {
    "colour": ("{n}'s favourite colour is {c}.", "La couleur préférée {de} est le {c}.",
               "El color favorito de {n} es el {c}.", "Die Lieblingsfarbe von {n} ist {c}.",
               "Il colore preferito di {n} è il {c}.", "A cor favorita de {n} é o {c}."),
    "market": ("{n} goes to the market on {d}.", "{n} va au marché le {d}.", "{n} va al mercado el {d}.",
               "{n} geht am {d} auf den Markt.", "{n} va al mercato il {d}.", "{n} vai ao mercado na {d}."),
    "pets": ("{n} has {k} {p}.", "{n} a {k} {p}.", "{n} tiene {k} {p}.", "{n} hat {k} {p}.", "{n} ha {k} {p}.",
             "{n} tem {k} {p}."),
}


def _sentence(frame: str, lang: int, name: str, colour: int, day: int, num: int, pet: int) -> str:
    de = f"d'{name}" if name[0] in "AEIOUH" else f"de {name}"
    return _FRAMES[frame][lang].format(n=name, de=de, c=_COLOURS[colour][lang], d=_DAYS[day][lang], k=_NUMS[num][lang],
                                       p=_PETS[pet][lang])


@family("language", "constraint", templates=6)
def language(rng: random.Random, template: int) -> Draft:
    """Say a sentence in a given language; misses use English or another language, or say something else."""
    frame, other_frame = rng.sample(sorted(_FRAMES), 2)
    name = rng.choice(_NAMES)
    slots = (rng.randrange(len(_COLOURS)), rng.randrange(len(_DAYS)), rng.randrange(len(_NUMS)),
             rng.randrange(len(_PETS)))
    lang = rng.randint(1, 5)
    wrong = rng.choice([k for k in range(1, 6) if k != lang])
    en, target = _sentence(frame, 0, name, *slots), _LANGS[lang]
    prompt = [f"Translate into {target}: \"{en}\"", f"How would I say \"{en}\" in {target}?",
              f"Write this in {target}, please: {en}",
              _chat(f"You are a {target} tutor. Answer only in {target}.", f"Say this for me: {en}"),
              f"I need this sentence in {target} for a postcard: {en}",
              _chat(f"Always reply in {target}.", f"Give me the sentence \"{en}\" and nothing else.")][template]
    shape = ["{x}", "In {l}: \"{x}\"", "{x}", "{x}", "\"{x}\"", "{x}"][template]

    def say(k: int, fr: str) -> str:
        return shape.format(x=_sentence(fr, k, name, *slots), l=_LANGS[k])

    best = say(lang, frame)
    misses: list[Miss] = [(say(wrong, frame), f"is in {_LANGS[wrong]} ('{_sentence(frame, wrong, name, *slots)}'), "
                                              f"not {target}", _bad(rng)),
                          (say(0, frame), f"stays in English ('{en}') instead of {target}", _bad(rng)),
                          (say(lang, other_frame), f"is in {target} but says '{_sentence(other_frame, 0, name, *slots)}'"
                                                   ", not the requested sentence", _partial(rng))]
    rng.shuffle(misses)
    return _draft(rng, prompt, (best, f"gives the sentence in {target}: '{_sentence(frame, lang, name, *slots)}'"),
                  misses, [(f"The reply must be in {target}", 70), (f"It must say: {en}", 30)],
                  f"it is the only response that says the requested sentence in {target}")


# ---------------------------------------------------------------- start_end_phrase

_STARTS = {"In short,": "In brief,", "Good question!": "Great question!", "Here is the answer:": "Here's the answer:",
           "To begin,": "To start,", "Quick answer:": "Short answer:", "Fun fact:": "Fun fact -",
           "Let me explain.": "Let me explain this.", "Sure thing.": "Sure."}
_ENDS = {"Hope this helps!": "Hope that helps!", "Thanks for asking.": "Thank you for asking.",
         "That is all for now.": "That's all for now.", "Stay curious!": "Stay curious.",
         "Happy learning!": "Happy studying!", "End of summary.": "End of the summary."}


def _after(phrase: str, text: str) -> str:
    return f"{phrase} {_lower_first(text) if phrase.endswith(',') else text}"


@family("start_end_phrase", "constraint", templates=6)
def start_end_phrase(rng: random.Random, template: int) -> Draft:
    """Start or end with a given phrase; misses alter the phrase, put it in the wrong place or leave it out."""
    topic, sents, other, other_sents = _pick(rng)
    purpose = rng.choice(_PURPOSES)
    start = template in (0, 2, 4)
    phrase, altered = rng.choice(sorted((_STARTS if start else _ENDS).items()))
    prompt = [f"Begin your reply with \"{phrase}\" and tell me about {topic} {purpose}.",
              f"Tell me about {topic} {purpose}. End your reply with the exact words \"{phrase}\"",
              _chat(f"Start every reply with the phrase '{phrase}'", f"What should I know about {topic}? It is {purpose}."),
              _chat(f"Finish every reply with the phrase '{phrase}'", f"Two sentences on {topic} {purpose}, please."),
              f"Your first words must be \"{phrase}\" Then describe {topic} {purpose}.",
              f"Describe {topic} {purpose} and sign off with \"{phrase}\""][template]
    body = " ".join(_sample(sents, 2, rng))
    off = " ".join(_sample(other_sents, 2, rng))
    where = "start" if start else "end"

    def place(p: str, text: str) -> str:
        return _after(p, text) if start else f"{text} {p}"

    head = " ".join(body.split()[:2]) if start else " ".join(body.split()[-2:])
    misplaced = f"{body} {phrase}" if start else _after(phrase, body)
    misses: list[Miss] = [(place(altered, body), f"uses '{altered}' at the {where}, not the exact phrase '{phrase}'",
                           _bad(rng)),
                          (misplaced, f"has '{phrase}' at the {'end' if start else 'start'}, not at the {where}",
                           _bad(rng)) if rng.random() < 0.5 else
                          (body, f"{'begins' if start else 'ends'} with '{head}'; the phrase '{phrase}' is missing",
                           _bad(rng)),
                          (place(phrase, off), f"has '{phrase}' at the {where} but is about {other}, not {topic}",
                           _partial(rng))]
    return _draft(rng, prompt, (place(phrase, body), f"{'begins' if start else 'ends'} with the exact phrase '{phrase}'"
                                                     f" and is about {topic}"), misses,
                  [(f"The reply must {where} with the exact phrase '{phrase}'", 70), (f"It must be about {topic}", 30)],
                  f"it is the only on-topic response that {where}s with the exact phrase '{phrase}'")
