"""A tiny parallel grammar of English, French, German and Spanish sentences.

Sentences are built from a language-neutral :class:`Sentence` (nouns, adjectives,
numbers, verbs, an optional fronted adverb or location) and rendered per language with
real agreement and word order, so translation is not word-by-word:

* French/Spanish adjectives mostly follow the noun; French *petit, grand, vieux,
  nouveau, beau* precede it (with *vieil/nouvel/bel* before a vowel), and ``des``
  becomes ``de`` before them; French elides ``le/la`` to ``l'``.
* Articles and adjectives agree in gender and number (``les chats noirs``,
  ``las flores azules``); English picks ``a``/``an``.
* German declines articles, adjectives (weak/mixed/strong) and nouns by case: the
  object is accusative or dative depending on the verb (``hilft dem Hund``), weak
  nouns take ``-n`` (``den Jungen``), dative plurals take ``-n``; a fronted adverb
  triggers verb-second inversion (``heute schläft der Hund``).
* Spanish marks animate objects with the personal ``a`` (``ve al perro``).

Held-out combinations (one adjective per noun, one verb per subject noun) never occur
in training sentences, so test sentences measure compositional generalisation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LANGUAGES = ("en", "fr", "de", "es")


@dataclasses.dataclass(frozen=True)
class Noun:
    key: str
    kind: str  # "human", "animal" or "thing"
    en: tuple[str, str]  # singular, plural
    fr: tuple[str, str, str]  # singular, plural, gender
    de: tuple[str, str, str]  # gender (m/f/n), singular, plural
    es: tuple[str, str, str]  # singular, plural, gender
    de_weak: bool = False  # n-declension: der Junge, den/dem Jungen

    @property
    def animate(self) -> bool:
        return self.kind != "thing"


def _n(key, kind, en, fr, de, es, de_weak=False) -> Noun:
    return Noun(
        key,
        kind,
        tuple(en.split()),
        tuple(fr.split()),
        tuple(de.split()),
        tuple(es.split()),
        de_weak,
    )


NOUNS = (
    _n("dog", "animal", "dog dogs", "chien chiens m", "m Hund Hunde", "perro perros m"),
    _n("cat", "animal", "cat cats", "chat chats m", "f Katze Katzen", "gato gatos m"),
    _n("bird", "animal", "bird birds", "oiseau oiseaux m", "m Vogel Vögel", "pájaro pájaros m"),
    _n(
        "horse",
        "animal",
        "horse horses",
        "cheval chevaux m",
        "n Pferd Pferde",
        "caballo caballos m",
    ),
    _n("mouse", "animal", "mouse mice", "souris souris f", "f Maus Mäuse", "ratón ratones m"),
    _n("cow", "animal", "cow cows", "vache vaches f", "f Kuh Kühe", "vaca vacas f"),
    _n("man", "human", "man men", "homme hommes m", "m Mann Männer", "hombre hombres m"),
    _n("woman", "human", "woman women", "femme femmes f", "f Frau Frauen", "mujer mujeres f"),
    _n("child", "human", "child children", "enfant enfants m", "n Kind Kinder", "niño niños m"),
    _n("girl", "human", "girl girls", "fille filles f", "n Mädchen Mädchen", "niña niñas f"),
    _n("boy", "human", "boy boys", "garçon garçons m", "m Junge Jungen", "chico chicos m", True),
    _n("friend", "human", "friend friends", "ami amis m", "m Freund Freunde", "amigo amigos m"),
    _n("ball", "thing", "ball balls", "balle balles f", "m Ball Bälle", "pelota pelotas f"),
    _n("book", "thing", "book books", "livre livres m", "n Buch Bücher", "libro libros m"),
    _n("apple", "thing", "apple apples", "pomme pommes f", "m Apfel Äpfel", "manzana manzanas f"),
    _n("car", "thing", "car cars", "voiture voitures f", "n Auto Autos", "coche coches m"),
    _n("hat", "thing", "hat hats", "chapeau chapeaux m", "m Hut Hüte", "sombrero sombreros m"),
    _n("flower", "thing", "flower flowers", "fleur fleurs f", "f Blume Blumen", "flor flores f"),
    _n("key", "thing", "key keys", "clé clés f", "m Schlüssel Schlüssel", "llave llaves f"),
    _n("box", "thing", "box boxes", "boîte boîtes f", "f Kiste Kisten", "caja cajas f"),
    _n("cake", "thing", "cake cakes", "gâteau gâteaux m", "m Kuchen Kuchen", "pastel pasteles m"),
)


@dataclasses.dataclass(frozen=True)
class Adjective:
    key: str
    fr: tuple[str, str, str, str]  # m.sg, f.sg, m.pl, f.pl
    fr_before: bool  # French position: before the noun
    de: str  # stem, takes declension endings
    es: tuple[str, str, str, str]  # m.sg, f.sg, m.pl, f.pl
    fr_vowel: str | None = None  # m.sg before a vowel: vieil, nouvel, bel

    @property
    def colour(self) -> bool:
        """Colours describe animals and things only, never people."""
        return self.key in ("black", "white", "red", "green", "blue")


def _a(key, fr, fr_before, de, es, fr_vowel=None) -> Adjective:
    return Adjective(key, tuple(fr.split()), fr_before, de, tuple(es.split()), fr_vowel)


ADJECTIVES = (
    _a("big", "grand grande grands grandes", True, "groß", "grande grande grandes grandes"),
    _a("small", "petit petite petits petites", True, "klein", "pequeño pequeña pequeños pequeñas"),
    _a("old", "vieux vieille vieux vieilles", True, "alt", "viejo vieja viejos viejas", "vieil"),
    _a(
        "new",
        "nouveau nouvelle nouveaux nouvelles",
        True,
        "neu",
        "nuevo nueva nuevos nuevas",
        "nouvel",
    ),
    _a(
        "beautiful",
        "beau belle beaux belles",
        True,
        "schön",
        "bonito bonita bonitos bonitas",
        "bel",
    ),
    _a("black", "noir noire noirs noires", False, "schwarz", "negro negra negros negras"),
    _a("white", "blanc blanche blancs blanches", False, "weiß", "blanco blanca blancos blancas"),
    _a("red", "rouge rouge rouges rouges", False, "rot", "rojo roja rojos rojas"),
    _a("green", "vert verte verts vertes", False, "grün", "verde verde verdes verdes"),
    _a("blue", "bleu bleue bleus bleues", False, "blau", "azul azul azules azules"),
)


def adjectives_for(noun: Noun) -> tuple[Adjective, ...]:
    """The adjectives that may describe ``noun``."""
    return tuple(a for a in ADJECTIVES if not (a.colour and noun.kind == "human"))


@dataclasses.dataclass(frozen=True)
class Verb:
    key: str
    forms: dict[str, tuple[str, str]]  # lang -> (3rd person singular, plural)
    objects: str | None  # None (intransitive), "any", "animate" or "thing"
    de_case: str = "acc"  # case of the German object
    es_personal_a: bool = True  # Spanish "a" before animate objects


def _v(key, en, fr, de, es, objects, de_case="acc", es_personal_a=True) -> Verb:
    forms = {"en": en, "fr": fr, "de": de, "es": es}
    return Verb(
        key, {k: tuple(v.split()) for k, v in forms.items()}, objects, de_case, es_personal_a
    )


VERBS = (
    _v("see", "sees see", "voit voient", "sieht sehen", "ve ven", "any"),
    _v("find", "finds find", "trouve trouvent", "findet finden", "encuentra encuentran", "any"),
    _v("carry", "carries carry", "porte portent", "trägt tragen", "lleva llevan", "any"),
    _v("draw", "draws draw", "dessine dessinent", "zeichnet zeichnen", "dibuja dibujan", "any"),
    _v("have", "has have", "a ont", "hat haben", "tiene tienen", "thing", es_personal_a=False),
    _v(
        "want",
        "wants want",
        "veut veulent",
        "möchte möchten",
        "quiere quieren",
        "thing",
        es_personal_a=False,
    ),
    _v("help", "helps help", "aide aident", "hilft helfen", "ayuda ayudan", "animate", "dat"),
    _v(
        "follow", "follows follow", "suit suivent", "folgt folgen", "sigue siguen", "animate", "dat"
    ),
    _v("sleep", "sleeps sleep", "dort dorment", "schläft schlafen", "duerme duermen", None),
    _v("play", "plays play", "joue jouent", "spielt spielen", "juega juegan", None),
    _v("wait", "waits wait", "attend attendent", "wartet warten", "espera esperan", None),
    _v("run", "runs run", "court courent", "läuft laufen", "corre corren", None),
)

NUMBERS = {
    "en": "two three four five six seven eight nine ten".split(),
    "fr": "deux trois quatre cinq six sept huit neuf dix".split(),
    "de": "zwei drei vier fünf sechs sieben acht neun zehn".split(),
    "es": "dos tres cuatro cinco seis siete ocho nueve diez".split(),
}  # index 0 is the number 2
ADVERBS = {
    "today": {"en": "today", "fr": "aujourd'hui", "de": "heute", "es": "hoy"},
    "now": {"en": "now", "fr": "maintenant", "de": "jetzt", "es": "ahora"},
}
LOCATIONS = {
    "garden": {
        "en": "in the garden",
        "fr": "dans le jardin",
        "de": "im Garten",
        "es": "en el jardín",
    },
    "house": {"en": "in the house", "fr": "dans la maison", "de": "im Haus", "es": "en la casa"},
    "park": {"en": "in the park", "fr": "dans le parc", "de": "im Park", "es": "en el parque"},
    "kitchen": {
        "en": "in the kitchen",
        "fr": "dans la cuisine",
        "de": "in der Küche",
        "es": "en la cocina",
    },
    "forest": {"en": "in the forest", "fr": "dans la forêt", "de": "im Wald", "es": "en el bosque"},
}
# Determiners: singular "def"/"indef"; plural "def_pl", "def_num" (the two ...), "num"
# (two ...) and "bare" (indefinite plural, objects only: cats / des chats / Katzen / gatos).
PLURAL_DETS = ("def_pl", "def_num", "num", "bare")

NOUN_BY_KEY = {n.key: n for n in NOUNS}
ADJ_BY_KEY = {a.key: a for a in ADJECTIVES}
VERB_BY_KEY = {v.key: v for v in VERBS}

# Held out of training: one adjective per noun and one verb per animate subject noun. A
# fixed formula, independent of the seed, so every build holds out the same combinations.
HELD_OUT_ADJ_NOUN = frozenset(
    (adjectives_for(n)[(7 * i + 3) % len(adjectives_for(n))].key, n.key)
    for i, n in enumerate(NOUNS)
)
HELD_OUT_SUBJ_VERB = frozenset(
    (n.key, VERBS[(5 * i + 1) % len(VERBS)].key)
    for i, n in enumerate(x for x in NOUNS if x.animate)
)


@dataclasses.dataclass(frozen=True)
class NounPhrase:
    noun: str
    det: str  # "def", "indef", "def_pl", "def_num", "num", "bare"
    number: int | None = None  # 2..10 for "def_num"/"num"
    adjective: str | None = None

    @property
    def plural(self) -> bool:
        return self.det in PLURAL_DETS


@dataclasses.dataclass(frozen=True)
class Sentence:
    subject: NounPhrase
    verb: str
    object: NounPhrase | None = None
    adverb: str | None = None  # fronted: "today", "now"
    location: str | None = None  # after intransitive verbs

    def combinations(self) -> set[tuple[str, str]]:
        """The (adjective, noun) and (subject noun, verb) pairs this sentence contains."""
        out = {(self.subject.noun, self.verb)}
        for np_ in (self.subject, self.object):
            if np_ is not None and np_.adjective:
                out.add((np_.adjective, np_.noun))
        return out

    def is_held_out(self) -> bool:
        """Whether it uses a combination that training sentences never contain."""
        c = self.combinations()
        return bool(c & HELD_OUT_ADJ_NOUN or c & HELD_OUT_SUBJ_VERB)


# -- rendering --------------------------------------------------------------------------


def _number(lang: str, np_: NounPhrase) -> list[str]:
    return [NUMBERS[lang][np_.number - 2]] if np_.det in ("def_num", "num") else []


def _en_np(np_: NounPhrase) -> list[str]:
    noun, adj = NOUN_BY_KEY[np_.noun], np_.adjective
    words = _number("en", np_) + ([adj] if adj else []) + [noun.en[np_.plural]]
    if np_.det == "indef":
        return ["an" if words[0][0] in "aeiou" else "a"] + words
    return (["the"] if np_.det in ("def", "def_pl", "def_num") else []) + words


def _fr_vowel(word: str) -> bool:
    return word[0] in "aeiouyhéèêâîô"  # our h-words (homme) are all h muet


def _fr_np(np_: NounPhrase) -> list[str]:
    noun = NOUN_BY_KEY[np_.noun]
    fem, pl = noun.fr[2] == "f", np_.plural
    word = noun.fr[pl]
    before, after = [], []
    if np_.adjective:
        adj = ADJ_BY_KEY[np_.adjective]
        form = adj.fr[2 * pl + fem]
        if adj.fr_vowel and not fem and not pl and _fr_vowel(word):
            form = adj.fr_vowel
        (before if adj.fr_before else after).append(form)
    words = _number("fr", np_) + before + [word] + after
    if np_.det == "def":
        art = "la" if fem else "le"
        return (["l'" + words[0]] + words[1:]) if _fr_vowel(words[0]) else [art] + words
    if np_.det == "indef":
        return ["une" if fem else "un"] + words
    if np_.det == "bare":  # "des chats", but "de petits chats" before a pre-noun adjective
        return ["de" if before else "des"] + words
    return (["les"] if np_.det in ("def_pl", "def_num") else []) + words


_DE_DEF = {
    "nom": ("der", "die", "das", "die"),
    "acc": ("den", "die", "das", "die"),
    "dat": ("dem", "der", "dem", "den"),
}  # m, f, n, plural
_DE_INDEF = {
    "nom": ("ein", "eine", "ein"),
    "acc": ("einen", "eine", "ein"),
    "dat": ("einem", "einer", "einem"),
}
_DE_GENDER = {"m": 0, "f": 1, "n": 2}


def _de_adj_ending(det: str, case: str, g: int) -> str:
    if det in ("def_pl", "def_num"):  # weak declension after "die"
        return "en"
    if det in ("num", "bare"):  # strong plural: no inflected article
        return "en" if case == "dat" else "e"
    if case == "dat":
        return "en"
    if det == "def":  # weak singular
        return "en" if (case, g) == ("acc", 0) else "e"
    # mixed declension after ein/eine
    return ("en" if case == "acc" else "er", "e", "es")[g]


def _de_np(np_: NounPhrase, case: str) -> list[str]:
    noun = NOUN_BY_KEY[np_.noun]
    g = _DE_GENDER[noun.de[0]]
    if np_.plural:
        word = noun.de[2]
        if case == "dat" and not word.endswith(("n", "s")):
            word += "n"
    else:
        word = noun.de[1] + ("n" if noun.de_weak and case != "nom" else "")
    adj = [ADJ_BY_KEY[np_.adjective].de + _de_adj_ending(np_.det, case, g)] if np_.adjective else []
    words = _number("de", np_) + adj + [word]
    if np_.det == "def":
        return [_DE_DEF[case][g]] + words
    if np_.det == "indef":
        return [_DE_INDEF[case][g]] + words
    return ([_DE_DEF[case][3]] if np_.det in ("def_pl", "def_num") else []) + words


def _es_np(np_: NounPhrase) -> list[str]:
    noun = NOUN_BY_KEY[np_.noun]
    fem, pl = noun.es[2] == "f", np_.plural
    adj = [ADJ_BY_KEY[np_.adjective].es[2 * pl + fem]] if np_.adjective else []
    words = _number("es", np_) + [noun.es[pl]] + adj
    art = {
        "def": ("el", "la"),
        "indef": ("un", "una"),
        "def_pl": ("los", "las"),
        "def_num": ("los", "las"),
    }.get(np_.det)
    return ([art[fem]] if art else []) + words


def render_words(s: Sentence, lang: str) -> list[str]:
    """The sentence in ``lang`` as a list of words (no capitalisation or punctuation)."""
    verb = VERB_BY_KEY[s.verb]
    v = verb.forms[lang][s.subject.plural]
    adv = [ADVERBS[s.adverb][lang]] if s.adverb else []
    loc = LOCATIONS[s.location][lang].split() if s.location else []
    if lang == "de":
        subj = _de_np(s.subject, "nom")
        obj = _de_np(s.object, verb.de_case) if s.object else []
        # Verb second: a fronted adverb pushes the subject after the verb.
        return (adv + [v] + subj if adv else subj + [v]) + obj + loc
    if lang == "en":
        subj, obj = _en_np(s.subject), _en_np(s.object) if s.object else []
    elif lang == "fr":
        subj, obj = _fr_np(s.subject), _fr_np(s.object) if s.object else []
    elif lang == "es":
        subj, obj = _es_np(s.subject), _es_np(s.object) if s.object else []
        # Personal "a" before specific animate objects (not before bare plurals).
        animate = s.object is not None and NOUN_BY_KEY[s.object.noun].animate
        if animate and verb.es_personal_a and s.object.det != "bare":
            obj = ["al"] + obj[1:] if obj[0] == "el" else ["a"] + obj
    else:
        raise ValueError(f"unknown language {lang!r}; known: {LANGUAGES}")
    return adv + subj + [v] + obj + loc


def render(s: Sentence, lang: str) -> str:
    """The sentence as written text: capitalised, with a final period."""
    text = " ".join(render_words(s, lang))
    return text[0].upper() + text[1:] + "."


def render_all(s: Sentence) -> dict[str, str]:
    return {lang: render(s, lang) for lang in LANGUAGES}


# -- sampling ---------------------------------------------------------------------------

MIN_WORDS, MAX_WORDS = 4, 10


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _sample_np(rng: np.random.Generator, nouns, is_object: bool) -> NounPhrase:
    noun = _choice(rng, nouns)
    dets = ("def", "def", "indef", "def_pl", "def_num", "num") + (("bare",) if is_object else ())
    det = _choice(rng, dets)
    number = int(rng.integers(2, 11)) if det in ("def_num", "num") else None
    adjective = _choice(rng, adjectives_for(noun)).key if rng.random() < 0.6 else None
    return NounPhrase(noun.key, det, number, adjective)


def sample_sentence(rng: np.random.Generator) -> Sentence:
    """A random grammatical sentence of MIN_WORDS..MAX_WORDS words in every language."""
    animate = [n for n in NOUNS if n.animate]
    while True:
        verb = _choice(rng, VERBS)
        subject = _sample_np(rng, animate, is_object=False)
        obj = location = None
        if verb.objects:
            pool = [
                n
                for n in NOUNS
                if n.key != subject.noun
                and (verb.objects == "any" or n.animate == (verb.objects == "animate"))
            ]
            obj = _sample_np(rng, pool, is_object=True)
        elif rng.random() < 0.7:
            location = _choice(rng, sorted(LOCATIONS))
        adverb = _choice(rng, (None, None, None, None, "today", "now"))
        s = Sentence(subject, verb.key, obj, adverb, location)
        lengths = [len(render_words(s, lang)) for lang in LANGUAGES]
        if min(lengths) >= MIN_WORDS and max(lengths) <= MAX_WORDS:
            return s


def sample_sentences(
    rng: np.random.Generator,
    count: int,
    held_out: bool,
    exclude: set[Sentence] | frozenset[Sentence] = frozenset(),
) -> list[Sentence]:
    """``count`` distinct sentences that do (``held_out``) or don't use held-out combinations."""
    out: list[Sentence] = []
    seen = set(exclude)
    for _ in range(1000 * count + 1000):
        if len(out) == count:
            return out
        s = sample_sentence(rng)
        if s.is_held_out() == held_out and s not in seen:
            seen.add(s)
            out.append(s)
    if len(out) == count:
        return out
    raise RuntimeError(f"could only sample {len(out)} of {count} distinct sentences")
