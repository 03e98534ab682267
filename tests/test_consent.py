"""Message classification: OptOutType, keywords, normal form, phrase rules, loading."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.config import KeywordConfig
from bridge.consent import (
    KEYWORDS_DIR,
    Intent,
    KeywordSets,
    classify,
    load_keyword_sets,
    normalise_message,
)

DATA = Path(__file__).parent / "data"
SHIPPED = ("en", "es", "fr", "pt")
DETECTED = {Intent.STOP, Intent.REVIEW}

TWILIO_STOP = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")
TWILIO_START = ("START", "YES", "UNSTOP")
TWILIO_HELP = ("HELP", "INFO")


@pytest.fixture(scope="module")
def english() -> KeywordSets:
    return load_keyword_sets(KeywordConfig())


@pytest.fixture(scope="module")
def bilingual() -> KeywordSets:
    return load_keyword_sets(KeywordConfig(languages=("en", "es")))


@pytest.fixture(scope="module")
def every_language() -> KeywordSets:
    return load_keyword_sets(KeywordConfig(languages=SHIPPED))


# --- OptOutType -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opt_out_type", "body", "expected"),
    [
        ("START", "stop", Intent.START),  # Twilio already acted: its category wins over the body
        ("STOP", "yes", Intent.STOP),
        ("HELP", "stop", Intent.HELP),
        ("STOP", None, Intent.STOP),
        ("STOP", "", Intent.STOP),
        ("STOP", "please stop texting me", Intent.STOP),
        (" stop ", "hello", Intent.STOP),
        ("Start", "hello", Intent.START),
        ("help\n", "hello", Intent.HELP),
        ("UNSUBSCRIBE", "hello", Intent.NONE),  # not a category: ignored, the body decides
        ("UNSUBSCRIBE", "stop", Intent.STOP),
        ("", "stop", Intent.STOP),
        ("   ", "yes", Intent.START),
        ("STOPALL", "thanks", Intent.NONE),
        (None, "help", Intent.HELP),
    ],
)
def test_opt_out_type_takes_precedence_when_valid(
    english: KeywordSets, opt_out_type: str | None, body: str | None, expected: Intent
) -> None:
    assert classify(body, opt_out_type, english) is expected


def test_missing_body_is_none(english: KeywordSets) -> None:
    assert classify(None, None, english) is Intent.NONE
    assert classify("", None, english) is Intent.NONE
    assert classify("   ...  ", None, english) is Intent.NONE


# --- default keywords -------------------------------------------------------------------------


def test_english_sets_are_exactly_twilios(english: KeywordSets) -> None:
    assert english.stop == {word.lower() for word in TWILIO_STOP}
    assert english.start == {word.lower() for word in TWILIO_START}
    assert english.help == {word.lower() for word in TWILIO_HELP}


@pytest.mark.parametrize(
    ("word", "expected"),
    [(word, Intent.STOP) for word in TWILIO_STOP]
    + [(word, Intent.START) for word in TWILIO_START]
    + [(word, Intent.HELP) for word in TWILIO_HELP],
)
def test_every_default_keyword(english: KeywordSets, word: str, expected: Intent) -> None:
    assert classify(word, None, english) is expected
    assert classify(word.lower(), None, english) is expected
    assert classify(word.title(), None, english) is expected


# --- normal form ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "STOP.",
        " stop ",
        "Stop!",
        "stop!!!",
        "'stop'",
        '"Stop"',
        "“stop”",
        "¡Stop!",
        "stop?",
        "STOP\n",
        "\tstop\r\n",
        "Stop 🛑",
        "🛑 STOP 🛑",
        "...stop...",
        "(stop)",
        "#stop",
        "\u200bstop\u200b",  # zero-width spaces
        "st\u00adop",  # soft hyphen inside the word
        "ｓｔｏｐ",  # fullwidth letters (NFKC)
        "sToP",
        "STOP\u200e",  # left-to-right mark
    ],
)
def test_keyword_survives_case_whitespace_and_surrounding_marks(
    english: KeywordSets, body: str
) -> None:
    assert classify(body, None, english) is Intent.STOP


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("stop please", Intent.REVIEW),
        ("STOP2", Intent.REVIEW),
        ("S T O P", Intent.REVIEW),
        ("stop all", Intent.REVIEW),  # STOPALL is the keyword, "stop all" is two words
        ("st op", Intent.REVIEW),  # a keyword split by a stray space
        ("stopping", Intent.NONE),
        ("nonstop", Intent.NONE),
        ("yes please", Intent.NONE),  # only opt-outs get the benefit of the doubt
        ("helpful", Intent.NONE),
        ("Stop by at 5?", Intent.NONE),
    ],
)
def test_not_a_whole_message_keyword(english: KeywordSets, body: str, expected: Intent) -> None:
    assert classify(body, None, english) is expected


@pytest.mark.parametrize(
    ("body", "normal"),
    [
        ("  STOP.  ", "stop"),
        ("Stop   texting\n\nme!!", "stop texting me"),
        ("Don’t text me", "don't text me"),
        ("ARRÊT", "arret"),
        ("¿Quién es?", "quien es"),
        ("Ya no me envíen más mensajes", "ya no me envien mas mensajes"),
        ("ＳＴＯＰ", "stop"),
        ("Straße", "strasse"),
        ("👍", ""),
        ("", ""),
        ("N/A", "n/a"),
        ("7/10", "7/10"),
    ],
)
def test_normal_form(body: str, normal: str) -> None:
    assert normalise_message(body) == normal


@given(st.text())
def test_normalise_message_is_idempotent(body: str) -> None:
    once = normalise_message(body)
    assert normalise_message(once) == once


@given(st.text())
def test_normal_form_has_no_surrounding_noise(body: str) -> None:
    normal = normalise_message(body)
    assert normal == normal.strip()
    assert "  " not in normal
    if normal:
        assert normal[0].isalnum()
        assert normal[-1].isalnum()


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=300)
@given(body=st.text(), opt_out_type=st.one_of(st.none(), st.text()))
def test_classify_never_raises(
    every_language: KeywordSets, body: str, opt_out_type: str | None
) -> None:
    assert isinstance(classify(body, opt_out_type, every_language), Intent)


@settings(max_examples=50)
@given(st.text(min_size=1000, max_size=5000))
def test_classify_never_raises_on_long_text(every_language: KeywordSets, body: str) -> None:
    assert isinstance(classify(body, None, every_language), Intent)


@pytest.mark.parametrize(
    "body",
    [
        "a" * 1_000_000,
        "stop " * 200_000,
        "don't stop texting " * 50_000,
        "\u0301" * 100_000,  # nothing but combining accents
        "🛑" * 100_000,
        "é" * 100_000,
        "\ud800stop\udfff",  # lone surrogates
        "\x00stop\x00",
        "#" * 100_000 + "stop",
        "s" + "\u200b" * 10_000 + "top",
    ],
)
def test_classify_copes_with_hostile_bodies(every_language: KeywordSets, body: str) -> None:
    began = time.perf_counter()
    assert isinstance(classify(body, None, every_language), Intent)
    assert time.perf_counter() - began < 0.5


@given(
    word=st.sampled_from(TWILIO_STOP + TWILIO_START + TWILIO_HELP),
    upper=st.lists(st.booleans(), min_size=11, max_size=11),
)
def test_keyword_match_is_case_insensitive(
    english: KeywordSets, word: str, upper: list[bool]
) -> None:
    mixed = "".join(c.upper() if up else c.lower() for c, up in zip(word, upper, strict=False))
    assert classify(mixed, None, english) is classify(word, None, english)


@given(
    word=st.sampled_from(TWILIO_STOP),
    before=st.text(alphabet=" \t\n.,!?¡¿'\"“”‘’()*-~…🛑🙏👍", max_size=5),
    after=st.text(alphabet=" \t\n.,!?¡¿'\"“”‘’()*-~…🛑🙏👍", max_size=5),
)
def test_surrounding_punctuation_and_emoji_never_hide_a_stop(
    english: KeywordSets, word: str, before: str, after: str
) -> None:
    assert classify(before + word + after, None, english) is Intent.STOP


# --- languages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("ALTO", Intent.STOP),
        ("Alto.", Intent.STOP),
        ("alto!!", Intent.STOP),
        ("Cancelar", Intent.STOP),
        ("CANCELÁR", Intent.STOP),  # accents ignored
        ("parar", Intent.STOP),
        ("Detener", Intent.STOP),
        ("AYUDA", Intent.HELP),
        ("¡Ayuda!", Intent.HELP),
        ("STOP", Intent.STOP),  # English stays
        ("sí", Intent.NONE),  # not an opt-in: the commonest survey answer
        ("BAJA", Intent.REVIEW),  # also means "low": flagged, not applied
        ("alto por favor", Intent.REVIEW),
        ("el dolor es alto hoy", Intent.NONE),
        ("ya no me envíen mensajes", Intent.REVIEW),
        ("no quiero más mensajes", Intent.REVIEW),
        ("dejen de enviarme mensajes", Intent.REVIEW),
        ("quiero darme de baja", Intent.REVIEW),
        ("bórrenme de la lista", Intent.REVIEW),
        ("borrenme de la lista", Intent.REVIEW),
        ("no dejen de enviarme recordatorios", Intent.NONE),
        ("Quiero dejar de fumar", Intent.NONE),
        ("estoy de baja por enfermedad", Intent.NONE),
    ],
)
def test_spanish(bilingual: KeywordSets, body: str, expected: Intent) -> None:
    assert classify(body, None, bilingual) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("ARRET", Intent.STOP),
        ("Arrêt", Intent.STOP),
        ("ARRÊTE", Intent.STOP),
        ("aide", Intent.HELP),
        ("SAIR", Intent.STOP),
        ("pare", Intent.STOP),
        ("ajuda", Intent.HELP),
    ],
)
def test_french_and_portuguese(every_language: KeywordSets, body: str, expected: Intent) -> None:
    assert classify(body, None, every_language) is expected


@pytest.mark.parametrize("body", ["ALTO", "Arrêt", "SAIR", "cancelar"])
def test_other_languages_stop_words_are_flagged_not_ignored(
    english: KeywordSets, body: str
) -> None:
    assert classify(body, None, english) is Intent.REVIEW


def test_unselected_help_words_stay_ordinary_text(english: KeywordSets) -> None:
    assert classify("ayuda", None, english) is Intent.NONE


def test_language_codes_are_case_insensitive() -> None:
    assert load_keyword_sets(KeywordConfig(languages=(" ES ", "En"))).languages == ("es", "en")


def test_unknown_language_names_it_and_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"'xx'.*available: en, es, fr, pt"):
        load_keyword_sets(KeywordConfig(languages=("en", "xx")))


def test_shipped_files_say_where_they_come_from() -> None:
    files = sorted(KEYWORDS_DIR.glob("*.yaml"))
    assert [path.stem for path in files] == sorted(SHIPPED)
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert set(data) == {"language", "source", "stop", "start", "help"}
        assert data["language"] == path.stem
        assert data["source"].strip()
        assert path.read_text(encoding="utf-8").startswith("#")  # a sourcing comment


# --- project keywords: extend and replace -----------------------------------------------------


def test_project_words_extend_the_language_sets() -> None:
    keywords = load_keyword_sets(KeywordConfig(languages=("en", "es"), stop=("BAJA",)))
    assert classify("baja", None, keywords) is Intent.STOP
    assert classify("cancel", None, keywords) is Intent.STOP
    assert classify("alto", None, keywords) is Intent.STOP
    assert classify("yes", None, keywords) is Intent.START


def test_replace_keeps_only_stop_start_help_and_the_projects_words() -> None:
    keywords = load_keyword_sets(
        KeywordConfig(languages=("en",), stop=("BAJA",), start=("RESUME",), replace=True)
    )
    assert keywords.stop == {"stop", "baja"}
    assert keywords.start == {"start", "resume"}
    assert keywords.help == {"help"}
    assert classify("STOP", None, keywords) is Intent.STOP
    assert classify("START", None, keywords) is Intent.START
    assert classify("HELP", None, keywords) is Intent.HELP
    assert classify("resume", None, keywords) is Intent.START
    assert classify("yes", None, keywords) is Intent.NONE
    assert classify("info", None, keywords) is Intent.NONE
    # A replaced default opt-out is still a revocation by any reasonable means.
    assert classify("cancel", None, keywords) is Intent.REVIEW
    assert classify("END", None, keywords) is Intent.REVIEW


def test_mandatory_keywords_survive_an_empty_language_list() -> None:
    keywords = load_keyword_sets(KeywordConfig(languages=()))
    assert classify("stop", None, keywords) is Intent.STOP
    assert classify("start", None, keywords) is Intent.START
    assert classify("help", None, keywords) is Intent.HELP


def test_project_words_are_normalised() -> None:
    keywords = load_keyword_sets(KeywordConfig(stop=("  Darse-De-Baja! ",), help=("AYÚDAME",)))
    assert "darse-de-baja" in keywords.stop
    assert classify("DARSE-DE-BAJA", None, keywords) is Intent.STOP
    assert classify("ayudame", None, keywords) is Intent.HELP


def test_a_word_with_two_meanings_is_refused() -> None:
    with pytest.raises(ValueError, match=r"yes.*stop and start"):
        load_keyword_sets(KeywordConfig(stop=("YES",)))


def test_an_empty_keyword_is_refused() -> None:
    with pytest.raises(ValueError, match=r"keywords\.stop.*'!!!'"):
        load_keyword_sets(KeywordConfig(stop=("!!!",)))


def test_keyword_sets_are_frozen_hashable_and_reusable() -> None:
    first = load_keyword_sets(KeywordConfig(languages=("en", "es")))
    second = load_keyword_sets(KeywordConfig(languages=("en", "es")))
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.stop = frozenset()  # type: ignore[misc]


# --- language files from another directory ----------------------------------------------------


def _write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


def test_keywords_dir_can_point_elsewhere(tmp_path: Path) -> None:
    _write(
        tmp_path, "de.yaml", 'language: de\nsource: test\nstop: ["STOPP"]\nstart: []\nhelp: []\n'
    )
    keywords = load_keyword_sets(KeywordConfig(languages=("de",)), keywords_dir=tmp_path)
    assert classify("Stopp!", None, keywords) is Intent.STOP
    with pytest.raises(ValueError, match="available: de"):
        load_keyword_sets(KeywordConfig(languages=("en",)), keywords_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- STOP\n", "expected a mapping"),
        ("language: fr\nstop: []\nstart: []\nhelp: []\n", "'language' must be 'de'"),
        ("language: de\nstop: STOPP\nstart: []\nhelp: []\n", "'stop' must be a list"),
        ("language: de\nstop: []\nstart: [YES]\nhelp: []\n", "quote YES"),
        ("language: de\nstop: []\nstart: []\n", "'help' must be a list"),
        ("language: de\nstop: ['...']\nstart: []\nhelp: []\n", "empty once normalised"),
    ],
)
def test_malformed_language_file_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path, "de.yaml", text)
    with pytest.raises(ValueError, match=message) as raised:
        load_keyword_sets(KeywordConfig(languages=("de",)), keywords_dir=tmp_path)
    assert "de.yaml" in str(raised.value)


# --- free-text revocations --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "opt out",
        "opt-out",
        "please stop texting me",
        "unsubscribe me",
        "no more texts",
        "take me off your list",
        "stop texting",
        "stop messaging me",
        "remove me",
        "don't text me anymore",
        "don’t text me anymore",
        "unsubscibe",
        "stpo",
        "stop txting me",
        "optout pls",
        "cancle",
        "How do I opt out?",
        "I withdraw from the study",
        "wrong number",
        "Stop. Who is this?",
        "Wrong number, please stop",
        "Wrong #",  # the normal form drops a trailing "#"; the phrase rules read it as number
        "sotp it",
        "Please stop. I've asked before.",
        "I want these texts to stop",
        "She no longer wishes to be contacted",
        "I'm dropping out of the study",
        "consider this my withdrawal from the study",
        "end all contact",
        "This is spam",
        "This is spam. Reporting you.",
        "I'd appreciate it if you could stop sending me messages",
        "Idk who u are but stop",
        "Stop or I'll report you",
        "plz stp",
        "Knock it off",
        "New number, the previous owner must've signed up",
        "Cease all communication with this number",
        "Please put me on your do not call list",
        "nope. not doing this anymore. bye, dont text",
        "This isn't Kevin's phone anymore",
        "I meant it, stop texting me",
        "Stop stop stop stop",
        "I think you meant to text someone else",
        "scam. reported.",
        "I would prefer not to be contacted by the study going forward",
        "This is Jen's dad. She's dropping out, please don't message her anymore",
        "Kindly remove my contact information from your records",
        "Please don't bother sending these anymore",
        "Kindly refrain from contacting me",
        "don't want these anymore",
        "you had the wrong number",  # "I had the wrong number" is the sender's own slip
    ],
)
def test_reads_as_revocation(english: KeywordSets, body: str) -> None:
    assert classify(body, None, english) is Intent.REVIEW


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Retirez-moi de votre liste", Intent.REVIEW),
        ("Merci d'arrêter les messages", Intent.REVIEW),  # the elision splits d'arrêter
        ("Vous vous êtes trompé de numéro", Intent.REVIEW),
        ("Ne m'écrivez plus", Intent.REVIEW),
        ("Me tira dessa lista por favor", Intent.REVIEW),
        ("Quero sair da pesquisa", Intent.REVIEW),
        ("Chega de mensagem, vou bloquear", Intent.REVIEW),
        ("Basta ya de mensajes, los voy a bloquear", Intent.REVIEW),
        ("J'ai arrêté de fumer", Intent.NONE),
        ("Parei de tomar o remédio", Intent.NONE),
        ("Me tira uma dúvida", Intent.NONE),  # "help me with a question"
        ("Vou bloquear o cartão", Intent.NONE),
        ("Voy a bloquear la tarjeta", Intent.NONE),
        ("Je retire mon consentement", Intent.REVIEW),
        ("c'est qui? laissez-moi tranquille", Intent.REVIEW),
        ("jveux pu recevoir vos textos", Intent.REVIEW),
        ("Não me contactem mais", Intent.REVIEW),
        ("quien es? dejeme en paz", Intent.REVIEW),
        ("Il faut que j'arrête", Intent.NONE),  # about oneself ("I have to stop")
        ("Je veux plus de rappels", Intent.NONE),  # may well mean "more reminders"
        ("Stp renvoyez le message", Intent.NONE),  # stp: s'il te plaît
        ("Não liguei mais", Intent.NONE),  # "I did not call again"
        ("Errei de número", Intent.NONE),  # "I dialled wrong"
        ("No contactarme antes de las 9", Intent.NONE),
        ("xfa dejen d mandarme msj", Intent.REVIEW),
        ("Je ne souhaite plus être contacté", Intent.REVIEW),
        ("arrete de mtexter stp", Intent.REVIEW),
        ("Nunca me inscrevi em nada, apaga meu número", Intent.REVIEW),
        ("numero equivocado, quise poner 5", Intent.NONE),  # a corrected answer
        ("Número errado, quis dizer 8", Intent.NONE),
        ("erreur de numéro dans ma réponse, c'est 4", Intent.NONE),
        ("Já comi, não quero mais", Intent.NONE),  # "I've eaten, I don't want more"
        ("Bloqueé el número que me llamaba", Intent.NONE),
        ("ya basta con los mensajes", Intent.REVIEW),
        ("Basta con un sí", Intent.NONE),  # "a yes is enough"
        ("Revoco mi consentimiento", Intent.REVIEW),
        ("parad ya con los sms", Intent.REVIEW),
        ("dejen de molestar", Intent.REVIEW),
        ("No paren los recordatorios", Intent.NONE),  # "don't stop the reminders"
        ("¿Cómo me doy de baja si algún día lo necesito?", Intent.NONE),
        ("Je révoque mon consentement", Intent.REVIEW),
        ("Ce n'est plus le numéro de Marc", Intent.REVIEW),
        ("Ce n'est plus le cas", Intent.NONE),
        ("Je signale ce numéro comme spam", Intent.REVIEW),
        ("Je vous signale que j'ai changé de numéro", Intent.NONE),
        ("Je bloque ce numéro", Intent.REVIEW),
        ("Je bloque mon agenda", Intent.NONE),
        ("Je demande juste comment se désinscrire, je continue", Intent.NONE),
        ("Me descadastra", Intent.REVIEW),
        ("Pode parar de me mandar mensagem", Intent.REVIEW),
        ("Favor parar os envios", Intent.REVIEW),
        ("Vou parar de tomar o remédio", Intent.NONE),
        ("Não autorizo mais o contato", Intent.REVIEW),
        ("Eu autorizo o contato", Intent.NONE),
        ("Não quero mais receber lembretes", Intent.REVIEW),
    ],
)
def test_french_portuguese_and_spanish_phrases(every_language: KeywordSets, body: str,
                                               expected: Intent) -> None:
    assert classify(body, None, every_language) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Stop by at 5?", Intent.NONE),
        ("don't stop the reminders", Intent.NONE),
        ("yes", Intent.START),
        ("I will stop smoking", Intent.NONE),
        ("can't stop laughing", Intent.NONE),
        ("the bus stop", Intent.NONE),
        ("I want to quit smoking", Intent.NONE),
        ("end of the week works", Intent.NONE),
        ("cancel my appointment tomorrow?", Intent.NONE),  # about the appointment, not texts
        ("3", Intent.NONE),
        ("no", Intent.NONE),
        ("N/A", Intent.NONE),
        ("Why did you stop texting me?", Intent.NONE),
        ("Please don't stop texting me", Intent.NONE),
        ("What happens if I reply stop?", Intent.NONE),
        ("I don't want to opt out", Intent.NONE),
        ("Please don't text me before 9am", Intent.NONE),
        ("Stop sending the survey at 6am", Intent.NONE),
        ("I'm not interested in the interview", Intent.NONE),
        ("canceled", Intent.NONE),  # below the fuzzy ratio: a reply about a visit, not a slip
        ("step", Intent.NONE),  # one letter from STOP, but short keywords are never fuzzed
        ("shop", Intent.NONE),
        ("Stop, I meant Tuesday", Intent.NONE),
        ("Cancel! I'm sick today", Intent.NONE),
        ("end it all", Intent.NONE),
        ("having withdrawal symptoms", Intent.NONE),
        ("I'm on leave, pause the texts", Intent.NONE),
        ("my withdrawal symptoms are worse", Intent.NONE),
        ("I'm dropping out of college", Intent.NONE),
        ("I need to be taken off the medication", Intent.NONE),
        ("I got taken out of the control group", Intent.NONE),
        ("I had to stop using my contact lenses", Intent.NONE),
        ("stop updating my contact info", Intent.NONE),
        ("The texts need to stop coming so early", Intent.NONE),
        ("I don't want to hear from you until Monday", Intent.NONE),
        ("Do not text after 8", Intent.NONE),
        ("How do I remove it?", Intent.NONE),
        ("this number isn't working", Intent.NONE),
        ("its not spam", Intent.NONE),
        ("I always get lost finding the clinic", Intent.NONE),
        ("answer #3", Intent.NONE),
        ("cancel it", Intent.NONE),
        ("if I stop the meds will I get sick?", Intent.NONE),
        ("I will report this to my doctor", Intent.NONE),
        ("I need to call my lawyer about the will", Intent.NONE),
        ("Stop or continue the medication?", Intent.NONE),
        ("Just curious, how do I opt out?", Intent.NONE),
        ("Can I unsubscribe from the emails but keep getting the texts?", Intent.NONE),
        ("I texted the wrong number earlier, my answer is 5", Intent.NONE),
        ("Can you cancel tomorrow's reminder only?", Intent.NONE),
        ("I'd like to opt out of the biobank but stay in the study", Intent.NONE),
        ("Remove me from the Tuesday group and put me in Thursday", Intent.NONE),
        ("How do I unsubscribe if I need to later?", Intent.NONE),
        ("I thought about quitting the study but I'll stick with it", Intent.NONE),
        ("I'm not quitting the study, just busy this week", Intent.NONE),
        ("wrong number on my last reply, should be 7", Intent.NONE),
        ("Does replying STOP also take me out of the study?", Intent.NONE),
        ("this diet is unsustainable", Intent.NONE),
        ("wrong number, I meant 7", Intent.NONE),
        ("Don't message me while I'm at work (8-4) pls", Intent.NONE),
        ("please remove this from the list of meds", Intent.NONE),
        ("Is this a scam?", Intent.NONE),
        ("I don't want these pills anymore", Intent.NONE),
        ("What does replying STOP do?", Intent.NONE),
        ("I don't want to accidentally unsubscribe", Intent.NONE),
        ("I think I had the wrong number before", Intent.NONE),
        ("Who handles withdrawing? I haven't decided", Intent.NONE),
        ("Call me instead of texting just this once", Intent.NONE),
        ("My sister unsubscribed but I like mine", Intent.NONE),
    ],
)
def test_ordinary_replies_are_not_revocations(
    english: KeywordSets, body: str, expected: Intent
) -> None:
    assert classify(body, None, english) is expected


# --- the labelled set -------------------------------------------------------------------------


def _labelled(name: str) -> list[dict[str, object]]:
    return yaml.safe_load((DATA / name).read_text(encoding="utf-8"))["messages"]


def _precision_recall(
    messages: list[dict[str, object]], keywords: KeywordSets
) -> tuple[float, float]:
    hits = false_alarms = misses = 0
    for message in messages:
        detected = classify(str(message["text"]), None, keywords) in DETECTED
        if detected and message["revocation"]:
            hits += 1
        elif detected:
            false_alarms += 1
        elif message["revocation"]:
            misses += 1
    return hits / (hits + false_alarms), hits / (hits + misses)


# (file, precision floor, recall floor). Measured with every shipped language, see
# bench/phrase_eval.py; floors sit a little under the measurement so only a real regression
# fails. The eighth and ninth held-out sets (written by someone who never saw the rules) were
# each measured once before revising the rules (0.971/0.823 and 0.919/0.850): those are the
# estimate for wording the rules have not seen; the eighth was used only for one fix since.
LABELLED_SETS = (
    ("revocation_messages.yaml", 0.97, 0.97),  # 0.995 (190/191), 1.000 (190/190)
    ("revocation_messages_holdout.yaml", 0.97, 0.97),  # 1.000 (72/72), 1.000 (72/72)
    ("revocation_messages_holdout2.yaml", 0.92, 0.97),  # 0.950 (76/80), 1.000 (76/76)
    ("revocation_messages_holdout3.yaml", 0.97, 0.95),  # 1.000 (78/78), 0.987 (78/79)
    ("revocation_messages_holdout4.yaml", 0.97, 0.97),  # 1.000 (108/108), 0.991 (108/109)
    ("revocation_messages_holdout5.yaml", 0.97, 0.97),  # 0.990 (99/100), 0.990 (99/100)
    ("revocation_messages_holdout6.yaml", 0.97, 0.97),  # 1.000 (120/120), 1.000 (120/120)
    ("revocation_messages_holdout7.yaml", 0.97, 0.97),  # 1.000 (122/122), 1.000 (122/122)
    ("revocation_messages_holdout8.yaml", 0.94, 0.80),  # 0.971 (103/106), 0.831 (103/124)
    ("revocation_messages_holdout9.yaml", 0.97, 0.95),  # 0.992 (129/130), 0.970 (129/133)
)


@pytest.mark.parametrize("name", [name for name, _, _ in LABELLED_SETS])
def test_labelled_set_is_well_formed(name: str) -> None:
    messages = _labelled(name)
    assert len(messages) >= (250 if name == "revocation_messages.yaml" else 100)
    texts = [message["text"] for message in messages]
    assert len(set(texts)) == len(texts)
    for message in messages:
        assert set(message) <= {"text", "revocation", "note"}
        assert isinstance(message["text"], str)
        assert isinstance(message["revocation"], bool)
    labels = [message["revocation"] for message in messages]
    assert 0.3 < sum(labels) / len(labels) < 0.7


@pytest.mark.parametrize(("name", "precision_floor", "recall_floor"), LABELLED_SETS)
def test_labelled_set_precision_and_recall(
    every_language: KeywordSets, name: str, precision_floor: float, recall_floor: float
) -> None:
    precision, recall = _precision_recall(_labelled(name), every_language)
    assert precision >= precision_floor
    assert recall >= recall_floor


def test_classification_is_fast(every_language: KeywordSets) -> None:
    texts = [str(m["text"]) for name, _, _ in LABELLED_SETS for m in _labelled(name)]
    began = time.perf_counter()
    for _ in range(5):
        for text in texts:
            classify(text, None, every_language)
    mean = (time.perf_counter() - began) / (5 * len(texts))
    assert mean < 200e-6  # ~12 µs measured; the budget is 50 µs, this leaves room for slow CI


# --- hostile input: properties of the whole classifier ----------------------------------------


@given(
    body=st.one_of(st.none(), st.text()),
    category=st.sampled_from([Intent.STOP, Intent.START, Intent.HELP]),
    upper=st.lists(st.booleans(), min_size=5, max_size=5),
    padding=st.tuples(st.text(" \t\n", max_size=3), st.text(" \t\n", max_size=3)),
)
def test_opt_out_type_always_wins_whatever_the_body(
    every_language: KeywordSets, body: str | None, category: Intent, upper: list[bool],
    padding: tuple[str, str],
) -> None:
    word = "".join(c.upper() if up else c.lower()
                   for c, up in zip(category.name, upper, strict=False))
    assert classify(body, padding[0] + word + padding[1], every_language) is category


@given(body=st.text(), opt_out_type=st.text())
def test_an_unknown_opt_out_type_is_ignored(
    every_language: KeywordSets, body: str, opt_out_type: str
) -> None:
    if opt_out_type.strip().upper() in ("STOP", "START", "HELP"):
        return
    assert classify(body, opt_out_type, every_language) is classify(body, None, every_language)


@settings(max_examples=300)
@given(st.text(max_size=300))
@example("Wrong #")  # the phrase rules read a lone "#" as "number": so must the normal form
def test_classification_depends_only_on_the_normal_form(
    every_language: KeywordSets, body: str
) -> None:
    """So what the normal form strips (case, accents, punctuation around, invisible
    characters, spacing) can never turn a message into something else."""
    assert classify(body, None, every_language) is classify(
        normalise_message(body), None, every_language)
