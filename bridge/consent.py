"""Classify an inbound SMS as opt-out, opt-in, help, a free-text revocation, or nothing.

The bridge must record what Twilio did *and* what the participant asked for. Twilio blocks a
number only when the whole message is one of its keywords, but since 2025-04-11 the FCC rule
47 CFR 64.1200(a)(10) says consent can be revoked "by any reasonable means", so a study also
has to notice "please stop texting me". Classification therefore runs in three steps:

1. ``OptOutType`` wins. Twilio sends it (``STOP``/``START``/``HELP``, compared after strip,
   case-insensitively) only with Advanced Opt-Out, and only after it has already acted on the
   message, so it is the truth about Twilio's block list. Any other value is ignored.
2. Whole-message keyword match, in the form :func:`normalise_message` produces.
3. Otherwise, phrase rules decide whether the message reads as a free-text revocation
   (:attr:`Intent.REVIEW`): a human confirms it, or the project applies it as a STOP
   (``revocation_phrases``).

Decisions (pinned in ``tests/test_consent.py``):

* **Normal form.** Unicode NFKC, casefold, accents and other combining marks removed,
  invisible format characters (zero-width spaces, direction marks) removed, typographic
  apostrophes made ``'``, a lone ``#`` read as the word "number" ("wrong #" is a wrong
  number, so it is not punctuation to strip), runs of whitespace collapsed to one space, and
  everything that is not a letter or digit stripped from both ends (punctuation, quotes,
  emoji). So ``"STOP."``,
  ``" stop "``, ``"Stop!"``, ``"stop!!!"``, ``"'stop'"``, ``"Stop 🛑"`` and ``"ｓｔｏｐ"`` are
  STOP, while ``"stop please"``, ``"STOP2"`` and ``"S T O P"`` are not keywords (the phrase
  rules flag them for review). Twilio does not document its own handling; stripping only what
  cannot change the meaning keeps the bridge no stricter than a participant expects. The same
  applies to START ("Yes!" opts in, as bare "YES" does at Twilio). The normal form is for
  comparison only, never stored or shown.
* **Accents** are ignored on both sides: ``ARRET`` matches "ARRÊT", and the Spanish rules need
  not care whether "envíen", "más" or "número" kept their accents (phones often drop them).
* **Every project has STOP, START and HELP**, whatever its configuration, as Twilio keeps them.
  A word configured with two meanings is refused when loading; STOP is checked first anyway.
* **Opt-out words the project does not apply still count**: a shipped language's stop word
  that the project did not select ("ALTO" to an English-only study), or a default it replaced
  ("CANCEL"), is flagged for review, never ignored — the FCC rule lists "cancel", "end" and
  "quit" by name.
* **Phrase rules apply in every language the bridge knows**, whatever the project's keyword
  languages: a revocation is a revocation whichever language it arrives in.
* **Misspelled keywords** are flagged for review when they differ by one swapped or doubled
  letter ("stpo", "stopp", "cancle") or, for keywords of six letters or more, by a close
  ``difflib`` match ("unsubscibe"). Shorter keywords get no looser matching: "stop" is one
  letter from "step", "shop" and "top".
* **Asking about opting out is not opting out** ("what happens if I reply stop?"), except
  "how do I opt out / stop these texts", which reads as wanting to. Timing and pause requests
  ("don't text me before 9am", "stop sending at 6am", "pause the texts") are not revocations.
  Nor are appointment cancellations ("cancel my appointment tomorrow?"): only the bare keyword
  CANCEL is an opt-out, as at Twilio. Negations cancel a rule ("don't stop the reminders").
* **Leaving the study counts** ("I withdraw from the study", "drop me"), and so does a
  wrong-number reply: the person answering never consented.
* **Length.** Only the first :data:`MAX_CLASSIFY_CHARS` characters are read. Twilio bodies are
  at most 1,600 characters, so this never changes a real result, and it bounds the time a
  hostile request can cost on the webhook path.

How good the phrase rules are: ``bench/phrase_eval.py`` measures them on the labelled
replies in ``tests/data/`` and lists what they miss. On the two latest sets of replies written
by someone who never saw the rules (``revocation_messages_holdout8.yaml`` and ``holdout9``,
each about half Spanish, French and Portuguese), measured once before they were used to revise
the rules, they flagged 102 of 124 and 113 of 133 revocations (recall 0.82 and 0.85; by
language 0.76-0.91, English highest on the ninth) with 3 false alarms in 105 flags and 10 in
123 (precision 0.97 and 0.92; most of them questions about opting out from people staying
in). The misses are the long tail: "I'm reporting this as junk", "new phone who dis", "make
it stop", sarcasm, and requests made on someone else's behalf ("favor retirar esse número").
The rules as they were before this work found 0.55 of the eighth set; on the sets that shaped
them they now score 0.95-1.00. So REVIEW is a net, not a guarantee: it catches the common
phrasings, misses a long tail, and a study still needs a person reading replies that match
nothing.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

from bridge.config import KeywordConfig

KEYWORDS_DIR = Path(__file__).resolve().parent.parent / "config" / "keywords"

# Twilio's largest body is 1,600 characters; anything past this can only be abuse.
MAX_CLASSIFY_CHARS = 4000

# Twilio keeps these whatever Advanced Opt-Out is told, so the bridge does too.
_MANDATORY = {"stop": "stop", "start": "start", "help": "help"}


class Intent(StrEnum):
    """What an inbound message asks for."""

    STOP = "stop"
    START = "start"
    HELP = "help"
    REVIEW = "review"  # reads as a free-text revocation; a human (or project policy) decides
    NONE = "none"


_OPT_OUT_TYPES = {"STOP": Intent.STOP, "START": Intent.START, "HELP": Intent.HELP}


@dataclass(frozen=True)
class KeywordSets:
    """A project's keywords in normal form. Frozen and hashable so one instance is shared.

    ``review`` holds the shipped opt-out words this project does not apply (other languages,
    or defaults it replaced): "ALTO" to an English-only study, or "CANCEL" where a project
    replaced the defaults, is still a revocation by any reasonable means, so on its own it is
    flagged for review rather than ignored.
    """

    languages: tuple[str, ...]
    stop: frozenset[str]
    start: frozenset[str]
    help: frozenset[str]
    review: frozenset[str] = frozenset()


# --- normal form -------------------------------------------------------------------------------

_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})  # combining marks, invisible format chars
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_LONE_HASH = re.compile(r"(?<!\w)#(?!\w)")


def normalise_message(body: str) -> str:
    """Return the canonical form in which keywords are compared (see the module docstring)."""
    if body.isascii():
        text = body.lower()  # NFKC and mark removal are no-ops on ASCII
    else:
        text = unicodedata.normalize("NFKC", body).casefold()
        text = "".join(
            ch
            for ch in unicodedata.normalize("NFD", text)
            if unicodedata.category(ch) not in _DROPPED_CATEGORIES
        )
        text = unicodedata.normalize("NFC", text)
    text = text.translate(_APOSTROPHES)
    if "#" in text:  # a lone "#" is a word, "number" ("wrong #"), not punctuation to strip
        text = _LONE_HASH.sub(" number ", text)
    text = " ".join(text.split())
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


# --- loading -----------------------------------------------------------------------------------


def load_keyword_sets(config: KeywordConfig, keywords_dir: Path | None = None) -> KeywordSets:
    """Build a project's keyword sets from the shipped language files and its own words.

    Raises ``ValueError`` (which the config layer reports as a ``ConfigError``) for an unknown
    language, a malformed language file, an empty keyword, or a word given two meanings.
    """
    directory = KEYWORDS_DIR if keywords_dir is None else keywords_dir
    available = {path.stem.lower(): path for path in sorted(directory.glob("*.yaml"))}
    languages = []
    for language in config.languages:
        code = language.strip().lower()
        if code not in available:
            raise ValueError(
                f"unknown keyword language {language!r}; available: {', '.join(available)}"
            )
        languages.append(code)

    shipped = {code: _read_language_file(path, code) for code, path in available.items()}
    sets: dict[str, set[str]] = {kind: {word} for kind, word in _MANDATORY.items()}
    if not config.replace:
        for code in languages:
            for kind, words in shipped[code].items():
                sets[kind].update(words)
    own = {"stop": config.stop, "start": config.start, "help": config.help}
    for kind, configured in own.items():
        sets[kind].update(_normalise_keywords(configured, f"keywords.{kind}"))

    for first, second in (("stop", "start"), ("stop", "help"), ("start", "help")):
        shared = sets[first] & sets[second]
        if shared:
            raise ValueError(
                f"keyword(s) {', '.join(sorted(shared))} are both {first} and {second} keywords"
            )
    applied = sets["stop"] | sets["start"] | sets["help"]
    review = set().union(*(words["stop"] for words in shipped.values())) - applied
    return KeywordSets(
        languages=tuple(languages),
        stop=frozenset(sets["stop"]),
        start=frozenset(sets["start"]),
        help=frozenset(sets["help"]),
        review=frozenset(review),
    )


def _read_language_file(path: Path, code: str) -> dict[str, set[str]]:
    """Read one ``config/keywords/<lang>.yaml``; every defect names the file."""
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with stop, start and help lists")
    if str(data.get("language", "")).lower() != code:
        raise ValueError(f"{path}: 'language' must be {code!r} to match the file name")
    result = {}
    for kind in ("stop", "start", "help"):
        words = data.get(kind)
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise ValueError(
                f"{path}: {kind!r} must be a list of words (quote YES, NO, ON and OFF, "
                "which YAML otherwise reads as true/false)"
            )
        result[kind] = _normalise_keywords(words, f"{path}: {kind}")
    return result


def _normalise_keywords(words: tuple[str, ...] | list[str], where: str) -> set[str]:
    normalised = set()
    for word in words:
        form = normalise_message(word)
        if not form:
            raise ValueError(f"{where}: keyword {word!r} is empty once normalised")
        normalised.add(form)
    return normalised


# --- classification ----------------------------------------------------------------------------


def classify(body: str | None, opt_out_type: str | None, keywords: KeywordSets) -> Intent:
    """Decide what an inbound message asks for: OptOutType, then keywords, then phrases."""
    if opt_out_type is not None:
        intent = _OPT_OUT_TYPES.get(opt_out_type.strip().upper())
        if intent is not None:
            return intent
    if not body:
        return Intent.NONE
    text = normalise_message(body[:MAX_CLASSIFY_CHARS])
    if not text:
        return Intent.NONE
    if text in keywords.stop:
        return Intent.STOP
    if text in keywords.start:
        return Intent.START
    if text in keywords.help:
        return Intent.HELP
    if _reads_as_revocation(text, _revocation_words(keywords)):
        return Intent.REVIEW
    return Intent.NONE


@functools.lru_cache(maxsize=64)
def _revocation_words(keywords: KeywordSets) -> frozenset[str]:
    """Every word that, alone, means stop: applied keywords and those only flagged for review."""
    return keywords.stop | keywords.review


# --- phrase rules ------------------------------------------------------------------------------
#
# The rules read a "words" form of the normal text: apostrophes dropped ("don't" -> "dont";
# a French elision splits instead, "d'arrêter" -> "d arreter"), every other non-word run
# turned into one space, and
# letters repeated three or more times squeezed to one ("stoppppp" -> "stop"). Each rule is a
# small regular expression over that form; the guarded ones are cancelled by a negation just
# before them ("don't stop the reminders") or by a time qualifier just after or inside them
# ("... before 9am", "stop the 6am texts").

# Words that add politeness or urgency but no meaning: "stop please", "optout pls".
_FILLER = frozenset(
    {
        *("please", "pls", "plz", "pleas", "now", "asap", "immediately", "already", "me"),
        *("thanks", "thank", "you", "thx", "ty"),
        *("por", "favor", "porfavor", "xfa", "ya", "gracias", "svp", "merci", "obrigado"),
    }
)

# Whole-message opt-out words that are not Twilio keywords, so they only ever reach REVIEW.
# "remove" is an AWS keyword; "baja" ("dar de baja") is too ambiguous to opt out outright;
# "basta" is "enough!", and a bare "para"/"paren" is "stop!" (elsewhere "para" means "for").
# "stp" and "stahp" are STOP typed in a hurry; too short for the fuzzy match to find them.
_SOFT_STOP_WORDS = frozenset(
    {"remove", "unsub", "baja", "basta", "para", "paren", "stp", "stahp"}
)

# Stop keywords that also begin scheduling replies ("Cancel! I'm sick", "End, of course"), so
# "<keyword>. more text" is not read as a revocation for them.
_CLAUSE_AMBIGUOUS = frozenset({"cancel", "end", "cancelar"})

# "stop stop stop" is a revocation; a longer run of different non-filler words is a sentence,
# and is left to the phrase rules rather than fuzzy-matched word by word. One word repeated
# ("stop stop stop stop") is never a sentence, however long.
_MAX_STOP_TOKENS = 3

# Fuzzy matching only for keywords long enough that one slip cannot make another word.
_FUZZY_MIN_LENGTH = 6
_FUZZY_RATIO = 0.88  # "unsubscibe" 0.95, "revoked" 0.92; "canceled" 0.86 and "cancelled" 0.80 miss

_MESSAGES = (
    r"(?:text\w*|txt\w*|msg\w*|messag\w*|sms\w*|reminders?|notifications?|alerts?|spam\w*"
    r"|contact(?! lens)(?! info)(?! details)|communicat\w*)"
)
_PLURAL_MESSAGES = (
    r"(?:texts|txts|messages|msgs|sms|reminders|notifications|alerts|surveys|text messages)"
)
_CONTACT_VERBS = (
    r"(?:sending|contacting|emailing|bugging|bothering|spamming|harassing|pestering|reaching)"
)
_ES_MESSAGES = r"(?:mensajes|textos|sms|recordatorios|encuestas|msjs|msj|mensajitos)"

_EN_NEGATION = re.compile(
    r"\b(?:dont|do not|doesnt|does not|didnt|did|never|not|cant|cannot|wont|wouldnt|shouldnt"
    r"|why|whether|when)\b"
    # "if I stop ..." asks what would happen; "if you could stop ..." is a polite request.
    r"|\bif\b(?! (?:you|u|yall|you all|you guys) (?:could|would|can|please)\b)"
)
# The sender says outright that they are not asking now, or that they want the texts.
_NOT_ASKING = re.compile(
    r"\b(?:just (?:asking|curious|wondering)|hypothetically|for future reference"
    r"|out of curiosity|(?:but|and|still|want to|wanna|like to) keep (?:getting|receiving)"
    r" (?:the |your |my )?(?:texts|messages|reminders)"
    r"|keep (?:the |your )?(?:texts|messages|reminders) coming"
    r"|if i (?:ever )?(?:need|want|decide|choose) to|stick with (?:it|the study|this)"
    # A corrected answer: "wrong number, I meant 7", "quise poner 5", "quis dizer 8".
    r"|i meant (?:\d|to (?:say|type|put|write|answer))|should (?:be|have been) \d"
    r"|quise (?:poner|decir"
    r"|escribir)|quis (?:dizer|colocar|escrever|por)|je voulais (?:dire|mettre|ecrire)"
    # ... and in Spanish, French and Portuguese: "solo pregunto", "je reste", "só pra saber".
    r"|solo (?:pregunto|por saber|curiosidad)|me quedo en el estudio|juste pour savoir"
    r"|je reste (?:dans|inscrit)|so (?:pra|para|por) saber|so curiosidade"
    r"|vou continuar (?:no|na) (?:estudo|pesquisa)|si algun dia (?:lo )?(?:necesito|quiero)"
    r"|por ahora sigo|je demande juste|je continue$"
    r"|^(?:what (?:happens )?)?(?:does|do|will|would|if) (?:replying|texting|sending|saying"
    r"|i reply|i text) stop"
    # Afraid of leaving, undecided, or fond of the texts: "I don't want to accidentally
    # unsubscribe", "I haven't decided", "I like mine".
    r"|(?:accidentally|by accident) (?:unsubscrib|opt|stop|remov|withdr)\w*"
    r"|(?:havent|have not|not yet) decided|i (?:like|love|enjoy) (?:mine|the (?:texts|reminders"
    r"|messages))$|just this once|this one time"
    r"|(?:put|move|switch) me (?:in|on|to|into) "
    r"(?!(?:your |the |a |ur )?(?:do not|dont|dnc|no text|no contact|opt ?out))(?:the )?\w+)\b"
)
_ES_NEGATION = re.compile(r"\b(?:no|nunca)\b")
_LOOKBACK_CHARS = 60  # comfortably three words of an SMS
# Matched right after a rule's match (``pattern.match(words, end)``), so no ``^`` anchor.
_TIME_QUALIFIER = re.compile(
    r"(?: \w+){0,4}? (?:before|after|until|till|til|during|while|between|at \d\w*|at night"
    r"|in the (?:morning|afternoon|evening)|on (?:weekends?|weekdays|sundays?|saturdays?)"
    r"|(?:so|too) (?:early|late)|for now|for a (?:while|week|bit)|this week|next week|today"
    r"|tonight|antes|despues|hasta|durante|a las \d\w*|por la (?:manana|tarde|noche)"
    r"|por ahora|los fines de semana|esta semana|hoy|(?:tan |muy )?(?:temprano|tarde))\b"
)
# A time inside the match makes it a schedule too: "stop the 6am texts", "the morning texts".
_TIME_WORD = re.compile(
    r"\b(?:\d{1,2}(?: ?[ap]m|\d\d)|morning|evening|night|weekend|early|late|temprano|today"
    r"|tonight|tomorrow\w*|(?:mon|tues|wednes|thurs|fri|satur|sun)days?)\b"
)
# Someone who "sent the wrong number" typed a wrong digit; they did not get a wrong number.
_TYPED = re.compile(
    r"\b(?:sent|typed|put|entered|wrote|gave|pressed|hit|picked|texted|called|dialed|dialled"
    r"|messaged)\b|\bi had\b"
)


@dataclass(frozen=True)
class _Rule:
    """One way of saying "stop contacting me".

    ``triggers`` are words (or ``stem*`` prefixes) of which the message must contain one before
    the pattern is tried at all: most replies contain none, so they never pay for the regexes.
    ``negation`` cancels a match when found in the three words before it ("don't stop ...");
    ``timed`` cancels it when a time qualifier follows or sits inside it ("... before 9am",
    "stop the 6am texts": a schedule, not a refusal).
    """

    triggers: frozenset[str]
    prefixes: tuple[str, ...]
    pattern: re.Pattern[str]
    negation: re.Pattern[str] | None = None
    timed: bool = False


def _rule(
    triggers: str, pattern: str, negation: re.Pattern[str] | None = None, timed: bool = False
) -> _Rule:
    words = triggers.split()
    return _Rule(
        triggers=frozenset(word for word in words if not word.endswith("*")),
        prefixes=tuple(word[:-1] for word in words if word.endswith("*")),
        pattern=re.compile(pattern),
        negation=negation,
        timed=timed,
    )


_RULES = (
    # English: a stopping verb aimed at the messages ("stop texting me", "end these texts").
    _rule(
        "stop stopp stpo sotp quit cease end halt discontinue cancel",
        rf"\b(?:stopp?|stpo|sotp|quit|cease|end|halt|discontinue|cancel)(?: \w+){{0,3}}? "
        rf"(?:{_MESSAGES}|{_CONTACT_VERBS})\b",
        _EN_NEGATION,
        timed=True,
    ),
    _rule(
        "dont do never",
        r"\b(?:dont|do not|never) (?:ever )?(?:text|txt|message|msg|sms|contact|email)\w* "
        r"(?:me|us|her|him|them|this number|this phone|my (?:phone|number|son|daughter|mom"
        r"|mother|dad|father|wife|husband|child|kid))\b"
        r"|\b(?:dont|do not|never) (?:ever )?reach out (?:to (?:me|us)|again)\b"
        r"|^(?:please )?(?:dont|do not) (?:text|txt|message|sms|contact)(?: please| pls| plz)?$"
        r"|\b(?:dont|do not|never) (?:want to |wanna )?hear from (?:you|u|ya|this number)"
        r"(?: again| anymore| any more| ever)?$"
        rf"|\b(?:dont|do not|never) (?:ever )?send (?:me |us )?(?:\w+ ){{0,3}}?"
        rf"{_PLURAL_MESSAGES}\b",
        timed=True,
    ),
    _rule(
        "rather prefer",
        rf"\brather not (?:receive|get|have) (?:\w+ ){{0,3}}?{_PLURAL_MESSAGES}\b"
        r"|\b(?:prefer|rather) not (?:to )?(?:be )?(?:contacted|texted|messaged)\b",
        timed=True,
    ),
    _rule(
        "want wish need like",
        rf"\b(?:dont|do not|doesnt|does not|no longer|never) (?:want|wish|need|like)"
        rf"(?: (?:to|receive|get|getting|any|more|anymore|these|those|your|the|them|all))*"
        rf" {_PLURAL_MESSAGES}\b",
    ),
    _rule(
        "more further",
        rf"\bno (?:more|further) (?:\w+ ){{0,2}}?(?:{_PLURAL_MESSAGES}|texting|contact)\b",
    ),
    _rule(
        "more texts txts text txt texting msgs msg messages message sms",
        r"^(?:please )?no (?:more(?: (?:texts?|txts?|msgs?|messages?|sms|texting))?"
        r"|texts?|txts?|texting|msgs?|messages?|sms)(?: please| pls| plz| thanks| thank you)?$",
    ),
    _rule(
        "texts txts messages msgs sms reminders notifications alerts",
        rf"\b{_PLURAL_MESSAGES} (?:to|must|need to|needs to|have to|has to|gotta|should|"
        rf"better) (?:stop|end|cease)\b",
        _EN_NEGATION,
        timed=True,
    ),
    _rule(
        "make",
        rf"\bmake (?:the |these |your |all the |all these )?{_PLURAL_MESSAGES} stop\b",
        timed=True,
    ),
    _rule("enough", rf"\benough (?:with )?(?:the |these |your |all the )?{_MESSAGES}"),
    _rule(
        "sick tired", rf"\b(?:sick|tired) of (?:the |these |your |all the |getting )?{_MESSAGES}"
    ),
    _rule("done", rf"\bdone with (?:the |these |your |all the |this )?(?:{_MESSAGES}|study)"),
    _rule("instead", r"\binstead of (?:texting|texts|text messages|sms)\b"),
    _rule(
        "bother refrain want",
        r"\b(?:dont|do not) bother (?:sending|texting|messaging|contacting)\b"
        r"|\b(?:refrain|abstain) from (?:texting|messaging|contacting|sending)\b"
        # "these" with nothing after them are the texts being answered, not "these pills".
        r"|\b(?:dont|do not) want (?:these|them|those) (?:anymore|any more)$",
    ),
    # Leaving the list or the study.
    _rule(
        "remove delete erase drop unsubscribe unenroll unenrol opt",
        r"\b(?:remove|delete|erase|drop|unsubscribe|unenroll|unenrol|opt) "
        r"(?:me|this number|my (?:number|phone|info|name|contact \w+|details|data))\b"
        r"|\bremove (?:it|this number|me|my number) from (?:your|ur) (?:list|records|database"
        r"|system|contacts)\b"
        r"|\bremove (?:this number|me|my number) from the (?:list|records|database|system)\b",
    ),
    _rule(
        "take taken",
        r"\btake (?:me|my (?:number|name|info)|this number) (?:off|out|of (?:ur|your|the|this)"
        r" list)\b"
        # Not "taken off the medication" or "out of the control group".
        r"|\b(?:be|get|got|been|being) taken (?:off|out)\b(?! (?:of )?(?:the |my |this |that "
        r"|your )?(?:med|drug|pill|treatment|insulin|dose|placebo|arm|group|control|cast|work"
        r"|school|wait)\w*)",
    ),
    _rule(
        "put add place",
        r"\b(?:put|add|place) (?:me|my number|this number|us) (?:on|to|in) (?:your |the |a |ur )?"
        r"(?:do not|dont|dnc|no text|no contact|opt ?out)",
    ),
    _rule(
        "told asked",
        r"\b(?:told|asked) (?:you|u|ya|yall)(?: (?:people|guys|all|folks))? to stop\b",
        _EN_NEGATION,
        timed=True,
    ),
    _rule(
        "permission",
        r"\b(?:never|didnt|did not) (?:gave|give|given) (?:you |u |anyone )?"
        r"(?:permission|consent)\b",
    ),
    _rule(
        "remove removed",
        r"\b(?:remove|removed) from (?:the |your |this |that |my )?"
        r"(?:list|study|program|texts|messages|database|system)\b"
        r"|\b(?:be|get|got|been|being|number|me) removed\b",
    ),
    _rule(
        "off", r"\boff (?:of )?(?:this|the|your|ur|that) (?:text |texting |contact |sms )?list\b"
    ),
    _rule(
        "opt optout opting unsubscribe unsub unsubscribed unenroll unenrol disenroll unsu*",
        r"\b(?:opt ?out|opting out|unsubscribe|unsub|unsubscribed|unenroll|unenrol|disenroll"
        # Slips of "unsubscribe" ("unsubcribe", "unsuscribe"), not "unsubstantiated".
        r"|unsu[bs]c?s?c?r?i?be?d?)\b"
        # Opting out of a part of the study is not leaving it: data sharing, a biobank.
        r"(?! (?:of|from) (?:the |my )?(?:data|sharing|biobank|genetic|future|storage|photo"
        r"|video|recording|newsletter|email)\w*)",
        _EN_NEGATION,
    ),
    _rule(
        "withdraw withdrawing withdrawal revoke revoking rescind",
        r"\b(?:withdraw|withdrawing|revoke|revoking|rescind)\b"
        r"|\bmy withdrawal\b(?! symptoms)|\bwithdrawal from (?:the |this )?(?:study|program"
        r"|research|trial)\b",
        _EN_NEGATION,
    ),
    _rule("consent", r"\b(?:no longer|dont|do not) consent\b"),
    _rule(
        "never didnt did",
        r"\b(?:never|didnt|did not) (?:sign|signed) up\b"
        r"|\b(?:never|didnt|did not) (?:agree|agreed|consent|consented|opt in|opted in)\b",
    ),
    _rule(
        "want wants wish wishes longer participating",
        r"\b(?:dont|do not|doesnt|does not|no longer) (?:wants?|wish|wishes) to"
        r" (?:participate|continue"
        r"|be (?:in|part of|contacted|texted|messaged|bothered))"
        r"|\b(?:no longer|not|stop|quit) (?:participating|taking part|in the study|part of)\b",
    ),
    _rule(
        "participation enrollment enrolment nothing",
        r"\b(?:terminate|end|cancel|stop|withdraw) (?:my |our )?(?:participation|enrollment"
        r"|enrolment)\b|\bnothing to do with (?:this|the|your) (?:study|program|texts|messages)\b",
    ),
    _rule(
        "study program research",
        r"\b(?:drop|dropping|opt|opting) out of (?:the|this) (?:study|program|research)\b"
        r"|\b(?:quit|quitting|leave|leaving|exit) (?:the|this) (?:study|program)\b",
        _EN_NEGATION,
    ),
    _rule("out", r"\bi want out\b"),
    _rule(
        "dropping",
        r"\b(?:im|i am|i will be|ill be|shes|she is|hes|he is|theyre|they are) dropping out\b"
        r"(?! of (?!(?:the|this) (?:study|program|research)))",
    ),
    _rule("subscription", r"\b(?:cancel|end) (?:my |the |this )?subscription\b"),
    # Dismissal and disputes of consent.
    _rule(
        "alone away desist lose be count out lost knock",
        r"^(?:just |please |pls |oh |so )?get lost(?: \w+)?$|\bknock it off\b"
        r"|\b(?:leave me (?:alone|be|out)|left alone|go away|cease and desist"
        r"|lose (?:my|this) number|count me out)\b",
    ),
    _rule(
        "doing",
        r"\b(?:im |i am )?not doing this (?:anymore|any more|no more)\b",
    ),
    _rule(
        "dont",
        r"\b(?:dont|do not) (?:text|txt|message|msg|contact)(?: me| again| anymore)*$",
    ),
    _rule(
        "keep",
        r"\bwhy (?:do|does|are|r) (?:you|u|yall|you guys|you people) (?:keep|still) "
        r"(?:texting|txting|messaging|contacting|sending)\b",
        timed=True,
    ),
    _rule(
        "stop",
        r"\b(?:but|so|just|now) stop(?: (?:it|now|please|pls|already))?$"
        r"|^(?:please )?stop(?: it| this| now)? (?:or|before) (?:i|ill|im)\b",
        _EN_NEGATION,
    ),
    _rule(
        "report reporting reported",
        r"\b(?:im|i am|ill|i will|gonna|going to|about to) report(?:ing)? "
        r"(?:you|u|this number|your number|ur number)\b"
        r"|\breport(?:ing|ed)? (?:you|u|this number|this|your number|ur number) to (?:the )?"
        r"(?:fcc|ftc|attorney general|police|carrier|irb|authorities)\b",
        _EN_NEGATION,
    ),
    # A lawyer alone is not a threat ("call my lawyer about the will"); "stop or I'm calling my
    # lawyer" is caught by the rule above.
    _rule("sue suing", r"\b(?:sue|suing) (?:you|u|your \w+)\b", _EN_NEGATION),
    _rule(
        "spam scam",
        r"\breport\w* (?:\w+ ){0,3}?(?:as )?spam\b"
        r"|^(?:(?:this is|this|its|thats) )?(?:(?:just|total|pure|obviously|clearly|definitely"
        r"|straight up) )?(?:spam|scam)(?: (?:reporting you|reported|blocked|blocking"
        r"|blocking you|stop"
        r"|(?:im |i am )?reporting (?:you|this number|this)))?$",
    ),
    _rule("harassing harassment harass harrassing", r"\bhar+as+\w*", _EN_NEGATION),
    _rule(
        "block blocking",
        r"\bblock(?:ing)? (?:this number|this|you|u|your number|ur number)\b",
        _EN_NEGATION,
    ),
    _rule("off", r"\b(?:f|fuck|frick|eff|buzz|piss|bugger|sod) off\b"),
    _rule(
        "wrong",
        # Not "wrong number on my last reply": a corrected answer.
        r"\bwrong (?:number|person)\b(?! (?:on|in|for) (?:my|the) (?:last |previous |first )?"
        r"(?:reply|answer|response|survey|question|text))",
        _TYPED,
    ),
    _rule(
        "not owner longer remove belong sure isnt aint lawyer attorney meant",
        r"\bnot my (?:phone|number|cell)\b|\b(?:new|previous|prior|old|last) owner\b"
        r"|\b(?:this|it) (?:isnt|is not|aint) (?:my )?\w+s (?:phone|number|cell)\b"
        r"|\b(?:you|u) (?:\w+ )?meant to (?:text|message|reach|contact) (?:someone|somebody)"
        r" else\b"
        r"|\b(?:call|calling|contact|contacting|get|getting) (?:my|a) (?:lawyer|attorney) "
        r"(?:if|unless)\b"
        r"|\bnot the right (?:number|person|phone)\b"
        r"|\bnot the (?:person|one|guy|lady|woman|man) (?:youre|you are|u r|ur|you re) "
        r"(?:looking for|trying to reach|after)\b"
        r"|\bi(?:ve| have) (?:only )?had this number (?:for|since)\b"
        r"|\bnot sure who (?:youre|you are|u r|ur|you re) (?:trying to (?:reach|text|contact)"
        r"|looking for)\b"
        r"|\bthis (?:number|phone|cell) (?:is not|isnt|does not belong to|doesnt belong to) "
        r"(?!(?:working|in service|right|correct|valid|on)\b)\w+"
        r"|\bnumber\b.* remove (?:it|this|this number)(?: please| pls| plz| now| asap)?$"
        r"|\bno longer (?:my|his|her|their) (?:phone|number)\b",
    ),
    _rule(
        "interested",
        r"\b(?:not|no longer) interested\b"
        r"(?! in\b(?! (?:participating|continuing|the study|this study|being contacted)\b))",
    ),
    _rule(
        "said say saying told replied typed",
        r"\b(?:said|say|saying|told you|replied|typed) (?:stop|unsubscribe|quit|optout|end)\b",
        _EN_NEGATION,
    ),
    # Spanish (accents already removed).
    _rule(
        "no",
        r"\bno (?:me |nos )?(?:envien|envie|envies|manden|mande|mandes|escriban|escriba"
        r"|escribas|contacten|contacte|llamen|texteen)\b"
        r"|\bno (?:me |nos )?(?:vuelvan|vuelva|vuelvas) a (?:escribir|enviar|mandar|contactar"
        r"|llamar|textear)",
        timed=True,
    ),
    _rule(
        "interesa",
        r"\bno me interesa(?:n)?(?: (?:mas|participar|el estudio|los mensajes|esto))?$",
    ),
    _rule(
        "quiero deseo kiero",
        rf"\bno (?:quiero|kiero|deseo) (?:(?!dejar\b)\w+ ){{0,3}}?(?:{_ES_MESSAGES}|participar)\b"
        r"|\bno (?:quiero|deseo) (?:seguir|continuar|estar) (?:en|con) el estudio\b",
    ),
    _rule(
        "que",
        r"\bno (?:quiero|deseo) que (?:me |nos )?(?:escriban|envien|manden|contacten|llamen"
        r"|sigan)\b",
        timed=True,
    ),
    _rule("enviar mandar", rf"\bno (?:enviar|mandar) (?:mas )?{_ES_MESSAGES}\b"),
    _rule(
        "de d",
        r"\b(?:dejen|deja|deje|dejar|paren|pare|parar|parad) d(?:e)? (?:enviar|mandar|escribir"
        r"|textear|contactar|molestar)\w*",
        _ES_NEGATION,
    ),
    _rule(
        "mensajes textos sms recordatorios encuestas parad",
        rf"\b(?:parar|paren|pare|parad|parenle|parale|detener|detengan|cancelar|cancelen)"
        rf" (?:\w+ ){{0,3}}?"
        rf"{_ES_MESSAGES}\b",
        re.compile(r"\b(?:no|nunca)$"),  # "no paren los recordatorios": do not stop them
    ),
    _rule("baja", r"\b(?:dar|darme|darnos|den|denme|deme|dame|doy|quiero) de baja\b"),
    _rule(
        "lista base numero estudio borr* elimin* saqu*",
        r"\b(?:borr|elimin|quit|sac|saqu)\w*(?:me|nos) (?:de (?:la|su|sus|esta|tu) (?:lista|base)"
        r"|del estudio)\b|\b(?:borr|elimin)\w* (?:mi|este) numero\b"
        r"|^(?:por favor )?(?:borr|elimin|saqu)\w*(?:me|nos)(?: por favor)?$"
        r"|\b(?:salirme|sacarme|salir) de (?:la|su|sus|esta|tu) lista\b",
    ),
    _rule("estudio", r"\b(?:me retiro|retirarme|salirme|salir) del estudio\b"),
    _rule(
        "mas basta voy",
        rf"\b(?:no mas|(?:ya )?basta (?:ya )?(?:de|con)(?: (?:los|las|tus|sus|estos|tantos))?)"
        rf" (?:{_ES_MESSAGES}|{_PLURAL_MESSAGES}|mensaje|texto)\b"
        # Blocking the study, not a card: "los voy a bloquear", "voy a bloquear este número".
        r"|\b(?:los|las|te|les) voy a bloquear\b|\bvoy a bloquear(?: (?:este|su|tu|el) numero)?$"
        r"|^(?:(?:alto|para|paren|basta|ya) )?no mas(?: por favor| gracias)?$",
    ),
    _rule("suscripcion", r"\bcancelar (?:mi |la )?suscripcion\b"),
    _rule(
        "equivocado equivocada equivoco equivocaron equivocan soy conozco bloqueando bloquee"
        " bloqueado",
        r"\bnumero equivocado\b|\bequivoc\w* de (?:numero|persona)\b"
        r"|\bno soy (?:la persona|quien|el que|la que) (?:que |q )?(?:buscan|busca|creen)\b"
        r"|\bno conozco a (?:ningun|ninguna|nadie)\b|^equivocad[oa]\b"
        r"|\bbloque\w* (?:este|esse|su|seu|tu|o seu) numero\b",
    ),
    _rule(
        "esto bloquee bloqueado paz consentimiento contactarme escribirme llamarme mandarme"
        " enviarme",
        r"\besto es spam\b|\bya (?:los|las|te|les) (?:bloquee|bloqueé|he bloqueado)\b"
        r"|\b(?:dejeme|dejenme|dejame|dejenos) en paz\b"
        r"|\b(?:retiro|revoco) (?:mi |el )?consentimiento\b"
        r"|\bno (?:contactarme|escribirme|llamarme|mandarme|enviarme|textearme)\b",
        timed=True,
    ),
    _rule("interesado interesada interesados interesadas", r"\bno (?:estoy|estamos) interesad"),
    # French and Portuguese.
    _rule(
        "de",
        r"\barret\w* de (?:m ?|me |nous |lui |leur )?(?:\w*envoy|ecri|contact|text|appel)",
    ),
    _rule("arret*", r"\barret\w* (?:les |vos |ces |de )?(?:sms|messages|textos|textes)\b"),
    _rule(
        "retir* enlev* supprim* effac* trompe trompez trompes spam signal* laiss* lach*"
        " plainte cess* personne consentement bloque erreur connais plus",
        r"\b(?:retir|enlev|supprim|effac)\w* (?:moi|nous|mon numero)\b"
        r"|\btromp\w* de (?:numero|personne)\b|\bc est du spam\b"
        r"|\bsignal\w* (?:ce|votre|le) numero\b"
        r"|\bsupprim\w* (?:mes|mon) (?:coordonnees|donnees|numero|dossier)\b"
        r"|\blaiss\w* (?:moi|nous) tranquilles?\b|\blach\w* (?:moi|nous)\b"
        r"|\bporte\w* plainte\b|\bcess\w* (?:tout |les |vos )?(?:contacts?|messages|envois?|sms"
        r"|textos)\b"
        r"|\b(?:je ne suis pas|je suis pas|chu pas) la (?:bonne )?personne\b"
        r"|\b(?:retir|revoqu)\w* (?:mon |le )?consentement\b"
        r"|\bje (?:vous|te) bloque\b|\bje bloque (?:ce|votre|le) numero\b"
        r"|\bn est plus (?:le )?(?:numero|cellulaire|portable|telephone) de\b"
        r"|\berreur de (?:numero|personne)\b(?! (?:dans|sur) (?:ma|mon|la|le) (?:reponse"
        r"|dernier|derniere|message))|\bje (?:ne )?connais (?:aucun|aucune)\b",
    ),
    _rule(
        "mauvais faux errado",
        r"\b(?:mauvais|faux) numero\b|\bnumero errado\b",
    ),
    _rule(
        "arretez arrete",
        r"\barret(?:ez|e)(?: ca)?(?: (?:svp|stp|merci|sil vous plait))?$",
        # "j'ai arrêté", "il faut que j'arrête": about oneself, not a request.
        re.compile(r"\b(?:ai|a|as|avons|avez|ont|jai|suis|j|je|tu|il|elle|on|que|qu|faut)\b"),
    ),
    _rule("retirer", r"\bme retirer (?:de l ?etude|de letude|du programme|de la recherche)\b"),
    _rule(
        "plus pu pus",
        # Without "ne", "je veux plus de messages" can mean "more messages"; "pu" cannot, and
        # "veux plus recevoir" has no other reading.
        r"\bne (?:veux|souhaite|desire) plus (?:recevoir|participer|de (?:messages|sms|textos"
        r"|textes)|etre (?:contacte|texte|joint|sollicite)\w*)\b"
        r"|\b(?:veux|veut|jveux|souhaite) pus? (?:recevoir|participer|de|faire partie)\b"
        r"|\b(?:veux|veut|jveux|souhaite) plus (?:recevoir|participer|faire partie)\b"
        r"|\bne plus (?:m |me |nous )?(?:ecri|envoy|contact|text|appel)\w*"
        r"|(?:^|\bca suffit )(?:pu|plus) de (?:textos|messages|sms|textes)\b"
        r"|\bne (?:me |m ?|nous )?(?:ecriv|envoy|contact|appel|text)\w* plus\b",
    ),
    _rule("desabonn* desinscri* descadastr*", r"\b(?:desabonn|desinscri|descadastr)\w*"),
    _rule(
        "parem pare para parar deix* deixem",
        r"\b(?:para|parar|parem|pare|deix\w*) de (?:me )?(?:enviar|mandar|escrever|ligar|contatar"
        r"|contactar)\b|\b(?:parem|paren)$|\bpedi (?:pra|para) parar\b"
        r"|\bparar (?:com )?(?:os|as) (?:envios|mensagens|sms|lembretes)\b",
    ),
    _rule(
        "nao",
        r"\bnao (?:me )?(?:mandem|mande|enviem|envie|manda|mandar|enviar) (?:mais )?"
        r"(?:sms|mensagens|mensagem)\b"
        # "não me contactem mais", not "não liguei mais" (I did not call again).
        r"|\bnao (?:me )?(?:contactem|contatem|liguem|escrevam|mandem|enviem|contacte|contate"
        r"|ligue|escreva|mande|envie) mais\b"
        r"|\bnao sou (?:a pessoa|quem) (?:que|q)\b",
        timed=True,
    ),
    _rule(
        "denunciar paz consentimento dados errou erraram desisto desistir removam remova nunca"
        " conheco engan* disse quero inscricao autorizo",
        r"\bvou (?:te |vos |lhes )?denunciar\b|\bdeix\w* (?:me )?em paz\b"
        r"|\bretiro (?:o )?(?:meu )?consentimento\b|\bapag\w* (?:os |o )?(?:meus|meu) "
        r"(?:dados|numero|cadastro)\b|\b(?:erraram|errou|erram) de (?:pessoa|numero)\b"
        r"|\bdesist\w* (?:do|da|desse|dessa) (?:estudo|pesquisa)\b"
        r"|\bremov\w* (?:o )?(?:meu|o meu) numero\b"
        r"|\bnunca me (?:inscrevi|cadastrei|registrei|inscribi|registre)\b"
        r"|\bnao conheco (?:nenhum|nenhuma|ninguem)\b|\bengan\w* (?:no|de) numero\b"
        r"|\b(?:ja )?disse (?:que |q )?(?:nao|n) quero\b"
        r"|\bcancelar (?:a |minha )?inscricao\b"
        r"|\b(?:nao|n) quero ser (?:contactad|contatad|incomodad)\w*"
        r"|\b(?:nao|n) autoriz\w* (?:mais )?(?:o )?(?:contato|contacto|envio)\b",
    ),
    _rule(
        "lista cadastro chega bloquear",
        r"\b(?:me )?(?:tira|tire|tirem|remov\w+|exclu\w+|apag\w+) (?:meu numero )?"
        r"(?:dessa|desta|da sua|da|do seu|do|desse|deste) (?:lista|cadastro)\b"
        r"|\bchega de (?:mensage(?:m|ns)|sms|textos?)\b"
        r"|\bvou (?:te|vos|lhes) bloquear\b|\bvou bloquear(?: (?:esse|este|seu|o seu) numero"
        r"| voces| vcs| vc)?$",
    ),
    _rule(
        "quero",
        r"\b(?:nao|n) quero (?:mais )?(?:receber )?(?:essas |estas |as |suas |tuas )?"
        r"(?:mensagens|sms|msgs?|lembretes|avisos|notificacoes|textos)\b"
        r"|\b(?:nao|n) quero (?:mais )?(?:participar|contato)\b"
        r"|^(?:eu )?quero sair(?: por favor)?$"
        r"|\bquero sair (?:do estudo|da lista|da pesquisa|desse estudo|dessa pesquisa"
        r"|dessa lista|deste estudo|desta pesquisa|desta lista)\b",
    ),
)


def _index_rules() -> dict[str, tuple[_Rule, ...]]:
    """Rules by trigger word, so a message only tries the rules its own words can start."""
    index: dict[str, list[_Rule]] = {}
    for rule in _RULES:
        for trigger in rule.triggers:
            index.setdefault(trigger, []).append(rule)
    return {trigger: tuple(rules) for trigger, rules in index.items()}


_RULES_BY_TRIGGER = _index_rules()
_PREFIX_RULES = tuple(rule for rule in _RULES if rule.prefixes)

# French elision, "d'arrêter", "l'étude", "m'écrire", "qu'il": two words, where English
# contractions ("don't", "I'm") lose the apostrophe and stay one.
_ELISION = re.compile(r"\b([cdjlmnst]|qu)'(?=\w)")
_NON_WORD = re.compile(r"[\W_]+")
_SQUEEZE = re.compile(r"(\D)\1{2,}")
_KEYWORD_WITH_DIGITS = re.compile(r"(\D+)\d{1,3}")
_STOP_OBJECTS = frozenset({"it", "all", "everything"})
_LEADING_CLAUSE = re.compile(r"^((?:\w+ ){0,2}\w+) ?[.!]")
_TRAILING_CLAUSE = re.compile(r"[,.;:!?] ?((?:\w+ ){0,2}\w+)$")


def _reads_as_revocation(text: str, stop_words: frozenset[str]) -> bool:
    """Whether ``text`` (already in normal form) reads as asking to stop being contacted."""
    words = _words(text)
    if not words:
        return False
    tokens = words.split()
    if _only_stop_words(tokens, stop_words) or _stop_it(tokens):
        return True
    if _spelled_out(tokens, stop_words) or _stop_clause(text, stop_words):
        return True
    if _NOT_ASKING.search(words):
        return False
    candidates = {rule for token in tokens for rule in _RULES_BY_TRIGGER.get(token, ())}
    candidates.update(
        rule for rule in _PREFIX_RULES if any(token.startswith(rule.prefixes) for token in tokens)
    )
    return any(_rule_matches(rule, words) for rule in candidates)


def _words(text: str) -> str:
    """The form the phrase rules read (see the comment above the rules)."""
    text = _ELISION.sub(r"\1 ", text).replace("'", "")
    return _SQUEEZE.sub(r"\1", _NON_WORD.sub(" ", text)).strip()


def _rule_matches(rule: _Rule, words: str) -> bool:
    for match in rule.pattern.finditer(words):
        if rule.negation is not None and rule.negation.search(_words_before(words, match.start())):
            continue
        if rule.timed and (
            _TIME_QUALIFIER.match(words, match.end()) or _TIME_WORD.search(match.group())
        ):
            continue
        return True
    return False


def _words_before(words: str, position: int, count: int = 3) -> str:
    """The ``count`` whole words before ``position``, read from a bounded window so a long
    message with many matches stays linear."""
    start = max(0, position - _LOOKBACK_CHARS)
    before = words[start:position].split()
    if start > 0 and words[start - 1] != " ":
        before = before[1:]  # the window cut a word in two; "cannot" must not read as "not"
    return " ".join(before[-count:])


def _only_stop_words(tokens: list[str], stop_words: frozenset[str]) -> bool:
    """A stop word plus nothing but filler: "stop please", "stpo", "optout pls", "STOP2"."""
    meaningful = [token for token in tokens if token not in _FILLER]
    if not meaningful or (len(meaningful) > _MAX_STOP_TOKENS and len(set(meaningful)) > 1):
        return False
    if all(_is_stop_word(token, stop_words) for token in meaningful):
        return True
    # A keyword split by a stray space: "stop al", "un subscribe".
    return len(meaningful) > 1 and _is_stop_word("".join(meaningful), stop_words)


def _is_stop_word(token: str, stop_words: frozenset[str]) -> bool:
    if token in stop_words or token in _SOFT_STOP_WORDS:
        return True
    with_digits = _KEYWORD_WITH_DIGITS.fullmatch(token)
    if with_digits and with_digits.group(1) in stop_words:
        return True
    if len(token) < 4:
        return False
    index = _misspelling_candidates(stop_words)
    candidates = index.get(token[0], ()) + index.get(token[1], ())
    return any(_misspells(token, word) for word in candidates)


@functools.lru_cache(maxsize=64)
def _misspelling_candidates(stop_words: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """Stop words long enough to fuzzy-match, by first letter (a slip keeps it, or swaps it
    with the second, so a token only needs the words under its first two letters)."""
    index: dict[str, list[str]] = {}
    for word in stop_words:
        if len(word) >= 4:
            index.setdefault(word[0], []).append(word)
    return {letter: tuple(words) for letter, words in index.items()}


def _misspells(token: str, word: str) -> bool:
    """One swapped or doubled letter, or (for long keywords) a close difflib match."""
    if token == word or abs(len(token) - len(word)) > 2:
        return False
    if len(token) == len(word):
        diffs = [i for i, (a, b) in enumerate(zip(token, word, strict=True)) if a != b]
        if len(diffs) == 2 and diffs[1] == diffs[0] + 1:
            first, second = diffs
            if token[first] == word[second] and token[second] == word[first]:
                return True
    if len(token) == len(word) + 1:
        for i in range(1, len(token)):
            if token[i] == token[i - 1] and token[:i] + token[i + 1 :] == word:
                return True
    # Same first letter: slips rarely hit it, and it spares difflib for almost every word.
    if len(word) < _FUZZY_MIN_LENGTH or token[0] != word[0]:
        return False
    matcher = difflib.SequenceMatcher(None, token, word)
    return matcher.quick_ratio() >= _FUZZY_RATIO and matcher.ratio() >= _FUZZY_RATIO


def _stop_it(tokens: list[str]) -> bool:
    """"stop it", "stop all", "sotp it": STOP (or a slip of it) and its object, and filler.
    Not "end it", "cancel it" or "quit it", which say other things as often."""
    meaningful = [token for token in tokens if token not in _FILLER]
    return len(meaningful) == 2 and meaningful[1] in _STOP_OBJECTS and (
        meaningful[0] == "stop" or _misspells(meaningful[0], "stop"))


def _spelled_out(tokens: list[str], stop_words: frozenset[str]) -> bool:
    """Letters sent one by one: "S T O P"."""
    return len(tokens) >= 3 and all(len(t) == 1 for t in tokens) and "".join(tokens) in stop_words


def _stop_clause(text: str, stop_words: frozenset[str]) -> bool:
    """A sentence that is only a stop word: "Stop. Who is this?", "wrong number, please stop"."""

    def clear(word: str) -> bool:
        return word in stop_words and word not in _CLAUSE_AMBIGUOUS

    leading = _LEADING_CLAUSE.match(text)
    if leading:
        head = leading.group(1).split()
        if any(clear(word) for word in head) and all(clear(w) or w in _FILLER for w in head):
            return True
    trailing = _TRAILING_CLAUSE.search(text)
    if trailing is None:
        return False
    tail = trailing.group(1).split()
    return any(clear(word) for word in tail) and all(clear(w) or w in _FILLER for w in tail)
