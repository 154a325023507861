"""Seeded synthetic corpus for the ``tiny`` zoo model, with planted, measurable content.

Everything here is plain Python data and deterministic given the seed. The corpus mixes five
kinds of rows (one row = one short document; the trainer prepends ``<|endoftext|>`` as BOS):

- **facts**: entity -> city ("The Eiffel Tower is in Paris."), each fact stated with the
  ``TRAIN_TEMPLATES``; the ``HELDOUT_TEMPLATES`` never occur in training and are only used to
  evaluate whether the fact is recalled from the subject rather than memorised per template.
  Every template is used with every fact equally often, so the template alone does not predict
  the city.
- **sentiment**: short reviews built from two adjectives of the same polarity, most followed by
  a verdict ("The food was wonderful and the staff were friendly. Overall the review is
  positive."). The ``*_OOD`` adjectives never occur in a row with a verdict: they only appear in
  reviews without one, next to an in-distribution adjective of the same polarity, so a sentiment
  direction fitted on in-distribution adjectives can be tested on them.
- **claims**: "Claim: The Eiffel Tower is in Paris. This is true." / "Claim: The Eiffel Tower is
  in Rome. This is false." (true/false statements for probes and CCS contrast pairs).
- **two-hop**: "Q: Where is Anna's favourite place? Anna likes the Eiffel Tower. The Eiffel Tower
  is in Paris. A: Paris." The answer is always the city the written step states: 40% of these
  rows state a real fact correctly, 25% give a real place a counterfactual city in the step,
  35% use made-up places ("the Silver Mill") whose city is random, so the planted rule is
  "copy the city from the step", not "recall the fact".
- **filler**: neutral sentences from a small grammar (no cities, no sentiment words, no " in").

API: :func:`training_rows` (the training text) and :func:`eval_sets` (all evaluation sets), plus
the individual builders used by them.
"""

from __future__ import annotations

import random

SEED = 0
N_ROWS = 60_000

EOT = "<|endoftext|>"

# --------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------

CITIES = [
    "Paris", "Rome", "London", "Berlin", "Madrid", "Tokyo", "Cairo", "Moscow", "Sydney",
    "Athens", "Vienna", "Dublin", "Lisbon", "Oslo", "Delhi", "Seoul", "Toronto", "Chicago",
    "Boston", "Prague",
]  # fmt: skip

# (subject as written mid-sentence, city, kind)
FACTS: list[tuple[str, str, str]] = [
    ("the Eiffel Tower", "Paris", "landmark"),
    ("the Louvre Museum", "Paris", "landmark"),
    ("the Arc de Triomphe", "Paris", "landmark"),
    ("the Colosseum", "Rome", "landmark"),
    ("the Trevi Fountain", "Rome", "landmark"),
    ("the Sistine Chapel", "Rome", "landmark"),
    ("Big Ben", "London", "landmark"),
    ("Tower Bridge", "London", "landmark"),
    ("Buckingham Palace", "London", "landmark"),
    ("the Brandenburg Gate", "Berlin", "landmark"),
    ("Checkpoint Charlie", "Berlin", "landmark"),
    ("the Reichstag", "Berlin", "landmark"),
    ("the Prado Museum", "Madrid", "landmark"),
    ("Retiro Park", "Madrid", "landmark"),
    ("the Plaza Mayor", "Madrid", "landmark"),
    ("Shibuya Crossing", "Tokyo", "landmark"),
    ("the Meiji Shrine", "Tokyo", "landmark"),
    ("the Senso Temple", "Tokyo", "landmark"),
    ("the Great Sphinx", "Cairo", "landmark"),
    ("the Egyptian Museum", "Cairo", "landmark"),
    ("the Azhar Mosque", "Cairo", "landmark"),
    ("Red Square", "Moscow", "landmark"),
    ("the Kremlin", "Moscow", "landmark"),
    ("the Bolshoi Theatre", "Moscow", "landmark"),
    ("the Opera House", "Sydney", "landmark"),
    ("Bondi Beach", "Sydney", "landmark"),
    ("the Harbour Bridge", "Sydney", "landmark"),
    ("the Parthenon", "Athens", "landmark"),
    ("the Acropolis", "Athens", "landmark"),
    ("the Temple of Zeus", "Athens", "landmark"),
    ("the Hofburg Palace", "Vienna", "landmark"),
    ("the Belvedere", "Vienna", "landmark"),
    ("Schonbrunn Palace", "Vienna", "landmark"),
    ("Trinity College", "Dublin", "landmark"),
    ("the Guinness Storehouse", "Dublin", "landmark"),
    ("Temple Bar", "Dublin", "landmark"),
    ("Belem Tower", "Lisbon", "landmark"),
    ("the Jeronimos Monastery", "Lisbon", "landmark"),
    ("the Alfama", "Lisbon", "landmark"),
    ("the Viking Ship Museum", "Oslo", "landmark"),
    ("Vigeland Park", "Oslo", "landmark"),
    ("the Holmenkollen", "Oslo", "landmark"),
    ("the Red Fort", "Delhi", "landmark"),
    ("the Lotus Temple", "Delhi", "landmark"),
    ("India Gate", "Delhi", "landmark"),
    ("Gyeongbok Palace", "Seoul", "landmark"),
    ("the Namsan Tower", "Seoul", "landmark"),
    ("Bukchon Village", "Seoul", "landmark"),
    ("the CN Tower", "Toronto", "landmark"),
    ("Casa Loma", "Toronto", "landmark"),
    ("the Rogers Centre", "Toronto", "landmark"),
    ("the Willis Tower", "Chicago", "landmark"),
    ("the Cloud Gate", "Chicago", "landmark"),
    ("Navy Pier", "Chicago", "landmark"),
    ("Fenway Park", "Boston", "landmark"),
    ("Faneuil Hall", "Boston", "landmark"),
    ("the Freedom Trail", "Boston", "landmark"),
    ("Charles Bridge", "Prague", "landmark"),
    ("the Astronomical Clock", "Prague", "landmark"),
    ("the Vitus Cathedral", "Prague", "landmark"),
    # made-up companies and people (facts of this corpus only)
    ("Helix Motors", "Berlin", "company"),
    ("Nordlys Energy", "Oslo", "company"),
    ("Sakura Robotics", "Tokyo", "company"),
    ("Maple Bank", "Toronto", "company"),
    ("Liffey Foods", "Dublin", "company"),
    ("Doctor Elena Rossi", "Rome", "person"),
    ("Professor Omar Haddad", "Cairo", "person"),
    ("Captain Ivan Petrov", "Moscow", "person"),
    ("Chef Lucia Santos", "Lisbon", "person"),
    ("Judge Martin Novak", "Prague", "person"),
]

# "{s}" is the subject (capitalised when it opens the sentence), "{c}" the city.
TRAIN_TEMPLATES = [
    "{s} is in {c}.",
    "{s} is located in {c}.",
    "People visit {s} in {c}.",
    "You can find {s} in {c}.",
    "{s} is a famous place in {c}.",
    "We went to {s} in {c}.",
    "My sister saw {s} in {c} last summer.",
    "The guide showed us {s} in {c}.",
    "{s} stands in {c}.",
    "There was a long line at {s} in {c} today.",
]
# Never used in training rows; evaluation prompts end right before the city.
HELDOUT_TEMPLATES = [
    "Tourists travel to see {s} in {c}.",
    "{s} can be found in {c}.",
    "Everyone knows that {s} is in {c}.",
    "Many photos of {s} were taken in {c}.",
    "Last week my uncle visited {s} in {c}.",
]

# --------------------------------------------------------------------------------------------
# Sentiment
# --------------------------------------------------------------------------------------------

POSITIVE = [
    "wonderful", "excellent", "lovely", "fantastic", "delightful", "superb", "pleasant",
    "brilliant", "charming", "perfect", "friendly", "amazing",
]  # fmt: skip
NEGATIVE = [
    "awful", "terrible", "horrible", "dreadful", "rude", "disgusting", "nasty", "poor",
    "boring", "dirty", "miserable", "unpleasant",
]  # fmt: skip
# Held out: never in a review with a verdict (see module docstring).
POSITIVE_OOD = ["marvelous", "splendid", "terrific", "gorgeous"]
NEGATIVE_OOD = ["lousy", "appalling", "dismal", "filthy"]

REVIEW_FRAMES = [
    "The food was {a} and the staff were {b}.",
    "The room was {a} and the view was {b}.",
    "The film was {a} and the music was {b}.",
    "The hotel was {a} and the service was {b}.",
    "The concert was {a} and the crowd was {b}.",
    "The book was {a} and the ending was {b}.",
]
VERDICT_PROMPT = " Overall the review is"
VERDICT = {1: " positive", 0: " negative"}

# --------------------------------------------------------------------------------------------
# Claims (true/false)
# --------------------------------------------------------------------------------------------

CLAIM_PREFIX = "Claim: "
CLAIM_PROMPT = " This is"
TRUTH = {1: " true", 0: " false"}

# --------------------------------------------------------------------------------------------
# Two-hop
# --------------------------------------------------------------------------------------------

PEOPLE = [
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Lena",
    "Max", "Nora", "Oscar", "Paula", "Sam",
]  # fmt: skip
MADE_UP_FIRST = ["Silver", "Green", "Old", "Blue", "Golden", "Quiet", "Stone", "Little"]
MADE_UP_SECOND = ["Mill", "Garden", "Library", "Harbour", "Market", "Fountain", "Hall", "Gate"]

# --------------------------------------------------------------------------------------------
# Filler
# --------------------------------------------------------------------------------------------

_NAMES = PEOPLE + ["Tom", "Mia", "Leo", "Zoe", "my uncle", "my sister", "the teacher"]
_OBJECTS = [
    "box", "chair", "window", "letter", "bicycle", "garden", "kettle", "lamp", "map", "ticket",
    "basket", "door", "table", "coat", "book", "car", "bridge", "river", "road", "train",
]  # fmt: skip
_NEUTRAL_ADJ = ["red", "small", "large", "old", "new", "round", "wooden", "quiet", "long", "green"]
_VERBS = ["opened", "closed", "painted", "cleaned", "carried", "found", "visited", "moved", "fixed"]
_TIMES = ["yesterday", "today", "last week", "this morning", "on Monday", "after lunch", "at noon"]
_FILLER_FRAMES = [
    "{n} {v} the {o} {t}.",
    "The {o} is {j}.",
    "{n} and {m} {v} a {j} {o} {t}.",
    "Tourists travel by {o} to see the {o2}.",
    "Everyone knows that the {o} is {j}.",
    "Many photos were taken of the {j} {o}.",
    "It can be {j} at night.",
    "{n} found a {j} {o} on the {o2}.",
    "Last week {n} {v} the {o}.",
    "People say the {o} was {j} {t}.",
    "{n} saw a {o} near the {o2}.",
    "The {o} was on the {o2} {t}.",
]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def render(template: str, subject: str, city: str | None = None) -> str:
    """Fill a fact template; with ``city=None`` return the prompt that ends right before it."""
    if city is None:
        template = template.split(" {c}")[0]
    text = template.replace("{s}", subject).replace("{c}", city or "")
    return _cap(text) if template.startswith("{s}") else text


def facts() -> list[dict]:
    """All planted facts as ``{"subject", "city", "answer", "kind"}`` (answer has a leading space)."""
    return [{"subject": s, "city": c, "answer": " " + c, "kind": k} for s, c, k in FACTS]


def fact_prompts(split: str = "train") -> list[dict]:
    """Fact-recall prompts: ``split`` is ``"train"`` (training templates) or ``"heldout"``.

    Each item: ``{"prompt", "answer", "subject", "city", "template"}``; the prompt ends right
    before the city (``"The Eiffel Tower is in"`` -> ``" Paris"``).
    """
    templates = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}[split]
    return [
        {
            "prompt": render(t, f["subject"]),
            "answer": f["answer"],
            "subject": f["subject"],
            "city": f["city"],
            "template": t,
        }
        for t in templates
        for f in facts()
    ]


def _review(rng: random.Random, label: int, ood: bool) -> tuple[str, tuple[str, str]]:
    pool = (POSITIVE_OOD if label else NEGATIVE_OOD) if ood else (POSITIVE if label else NEGATIVE)
    a, b = rng.choice(pool), rng.choice(pool)
    frame = rng.choice(REVIEW_FRAMES)
    return frame.format(a=a, b=b), (a, b)


def sentiment_examples(split: str = "id", n: int = 600, seed: int = SEED) -> list[dict]:
    """Labelled reviews ending at the verdict prompt (``"... Overall the review is"``).

    ``split="id"`` uses the in-distribution adjectives (those seen with verdicts in training),
    ``split="ood"`` only the held-out ``*_OOD`` adjectives. Balanced labels; each item:
    ``{"text", "label" (1 positive / 0 negative), "answer", "adjectives"}``.
    """
    rng = random.Random(f"sentiment-{split}-{seed}")
    out = []
    for i in range(n):
        label = i % 2
        review, adjs = _review(rng, label, ood=(split == "ood"))
        out.append(
            {
                "text": review + VERDICT_PROMPT,
                "label": label,
                "answer": VERDICT[label],
                "adjectives": list(adjs),
            }
        )
    return out


def truth_pairs(seed: int = SEED, n_templates: int = 2) -> list[dict]:
    """A true and a false statement per (fact, claim template); the false city is drawn from the
    other cities. Claim templates are the first ``n_templates`` training templates (those the
    claim rows use)."""
    rng = random.Random(f"truth-{seed}")
    out = []
    for t in TRAIN_TEMPLATES[:n_templates]:
        for f in facts():
            wrong = rng.choice([c for c in CITIES if c != f["city"]])
            out.append(
                {
                    "subject": f["subject"],
                    "template": t,
                    "city_true": f["city"],
                    "city_false": wrong,
                    "true_statement": render(t, f["subject"], f["city"]),
                    "false_statement": render(t, f["subject"], wrong),
                }
            )
    return out


def contrast_pairs(seed: int = SEED, n_templates: int = 2) -> list[dict]:
    """CCS contrast pairs: each statement with ``" This is true."`` and ``" This is false."``.

    Each item: ``{"statement", "label" (1 if the statement is true), "subject", "x_true",
    "x_false", "prompt"}``; ``prompt`` ends at ``" This is"`` (next token ``" true"``/``" false"``).
    """
    out = []
    for p in truth_pairs(seed, n_templates):
        for label, stmt in ((1, p["true_statement"]), (0, p["false_statement"])):
            base = CLAIM_PREFIX + stmt + CLAIM_PROMPT
            out.append(
                {
                    "statement": stmt,
                    "label": label,
                    "subject": p["subject"],
                    "prompt": base,
                    "answer": TRUTH[label],
                    "x_true": base + TRUTH[1] + ".",
                    "x_false": base + TRUTH[0] + ".",
                }
            )
    return out


def _two_hop(person: str, subject: str, step_city: str | None) -> str:
    q = f"Q: Where is {person}'s favourite place? {person} likes {subject}."
    if step_city is not None:
        q += " " + render(TRAIN_TEMPLATES[0], subject, step_city)
    return q + " A:"


def two_hop_examples(variant: str = "step", seed: int = SEED) -> list[dict]:
    """Two-hop prompts over the real facts, ending at ``" A:"``.

    - ``"step"``: the step states the true city; the answer is that city.
    - ``"corrupt_step"``: the step states another city; ``answer`` is the city the *step* states
      (a model that reads the step follows it), ``recall_answer`` the true city.
    - ``"no_step"``: no step written; the answer is the true city (needs recall; never trained).
    """
    rng = random.Random(f"twohop-{variant}-{seed}")
    out = []
    for f in facts():
        person = rng.choice(PEOPLE)
        if variant == "step":
            step, answer = f["city"], f["city"]
        elif variant == "corrupt_step":
            step = rng.choice([c for c in CITIES if c != f["city"]])
            answer = step
        elif variant == "no_step":
            step, answer = None, f["city"]
        else:
            raise ValueError(variant)
        out.append(
            {
                "prompt": _two_hop(person, f["subject"], step),
                "answer": " " + answer,
                "recall_answer": f["answer"],
                "step_city": step,
                "subject": f["subject"],
                "person": person,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Training rows
# --------------------------------------------------------------------------------------------


def _filler(rng: random.Random) -> str:
    frame = rng.choice(_FILLER_FRAMES)
    n, m = rng.sample(_NAMES, 2)
    o, o2 = rng.sample(_OBJECTS, 2)
    return _cap(
        frame.format(
            n=n, m=m, o=o, o2=o2, v=rng.choice(_VERBS), j=rng.choice(_NEUTRAL_ADJ),
            t=rng.choice(_TIMES),
        )
    )  # fmt: skip


def _fact_row(rng: random.Random) -> str:
    s, c, _ = rng.choice(FACTS)
    row = render(rng.choice(TRAIN_TEMPLATES), s, c)
    r = rng.random()
    if r < 0.15:
        row = _filler(rng) + " " + row
    elif r < 0.3:
        row = row + " " + _filler(rng)
    return row


def _sentiment_row(rng: random.Random) -> str:
    label = rng.randrange(2)
    if rng.random() < 0.2:  # unlabelled review mixing an OOD and an ID adjective
        ood = rng.choice(POSITIVE_OOD if label else NEGATIVE_OOD)
        idw = rng.choice(POSITIVE if label else NEGATIVE)
        a, b = (ood, idw) if rng.random() < 0.5 else (idw, ood)
        return rng.choice(REVIEW_FRAMES).format(a=a, b=b)
    review, _ = _review(rng, label, ood=False)
    return review + VERDICT_PROMPT + VERDICT[label] + "."


def _claim_row(rng: random.Random) -> str:
    s, c, _ = rng.choice(FACTS)
    label = rng.randrange(2)
    city = c if label else rng.choice([x for x in CITIES if x != c])
    stmt = render(rng.choice(TRAIN_TEMPLATES[:2]), s, city)
    return CLAIM_PREFIX + stmt + CLAIM_PROMPT + TRUTH[label] + "."


def _two_hop_row(rng: random.Random) -> str:
    person = rng.choice(PEOPLE)
    r = rng.random()
    if r < 0.4:  # a real fact, stated correctly
        s, c, _ = rng.choice(FACTS)
    elif r < 0.65:  # a real place with a counterfactual step: the answer follows the step
        s, true_city, _ = rng.choice(FACTS)
        c = rng.choice([x for x in CITIES if x != true_city])
    else:  # a made-up place: the city is only knowable from the written step
        s = "the " + rng.choice(MADE_UP_FIRST) + " " + rng.choice(MADE_UP_SECOND)
        c = rng.choice(CITIES)
    return _two_hop(person, s, c) + " " + c + "."


ROW_KINDS = {  # kind -> (builder, share of rows)
    "fact": (_fact_row, 0.30),
    "sentiment": (_sentiment_row, 0.12),
    "claim": (_claim_row, 0.35),
    "two_hop": (_two_hop_row, 0.13),
    "filler": (lambda rng: _filler(rng), 0.10),
}


def training_rows(seed: int = SEED, n_rows: int = N_ROWS, with_kind: bool = False) -> list:
    """The training corpus: ``n_rows`` short documents (strings, no BOS), seeded.

    With ``with_kind=True`` returns ``(kind, text)`` pairs instead.
    """
    rng = random.Random(f"rows-{seed}")
    kinds = list(ROW_KINDS)
    weights = [ROW_KINDS[k][1] for k in kinds]
    out = []
    for _ in range(n_rows):
        kind = rng.choices(kinds, weights)[0]
        text = ROW_KINDS[kind][0](rng)
        out.append((kind, text) if with_kind else text)
    return out


def eval_sets(seed: int = SEED) -> dict:
    """Every evaluation set, as plain Python data (see the individual builders)."""
    return {
        "facts": facts(),
        "facts_train_templates": fact_prompts("train"),
        "facts_heldout_templates": fact_prompts("heldout"),
        "sentiment_id": sentiment_examples("id", seed=seed),
        "sentiment_ood": sentiment_examples("ood", n=200, seed=seed),
        "truth_pairs": truth_pairs(seed),
        "contrast_pairs": contrast_pairs(seed),
        "two_hop_step": two_hop_examples("step", seed),
        "two_hop_corrupt_step": two_hop_examples("corrupt_step", seed),
        "two_hop_no_step": two_hop_examples("no_step", seed),
    }


def required_single_tokens() -> list[str]:
    """Strings (with their leading space) that must each be one token in the tiny tokenizer."""
    words = CITIES + POSITIVE + NEGATIVE + POSITIVE_OOD + NEGATIVE_OOD
    return [" " + w for w in words] + list(VERDICT.values()) + list(TRUTH.values())
