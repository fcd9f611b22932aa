"""Fixed vocabulary and prompt templates of the toy NLA pair.

Everything here is data: the word list the toy subject reads, the special tokens
(Gemma-like ids), and the AV/AR prompt templates in the released wording.
Changing anything here changes every toy checkpoint.

Like Gemma-3's SentencePiece vocabulary, every word and punctuation mark comes
twice: bare (``cat``) and after a space (``▁cat``); the tags of the templates are
ordinary text (``<concept>`` is ``<``, ``concept``, ``>``, and ``</concept>`` is
``</``, ``concept``, ``>``), so the marker's neighbours are ``>`` and ``</`` as in
the released Gemma sidecars.
"""

from __future__ import annotations

import re

__all__ = [
    "AR_TEMPLATE",
    "AV_TEMPLATE",
    "BOI_TOKEN",
    "BOS_TOKEN",
    "CONFIDENT",
    "CONTENT_WORDS",
    "END_OF_TURN",
    "EOI_TOKEN",
    "EOS_TOKEN",
    "EXPLANATION_WORDS",
    "IMAGE_TOKEN",
    "INJECTION_CHAR",
    "PAD_TOKEN",
    "PUNCTUATION",
    "SPACE",
    "SPECIAL_TOKENS",
    "START_OF_TURN",
    "TAG_WORDS",
    "TASK_WORDS",
    "TOKEN_NAMES",
    "UNK_TOKEN",
    "base_vocabulary",
    "words",
]

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
BOS_TOKEN = "<bos>"
UNK_TOKEN = "<unk>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
BOI_TOKEN = "<start_of_image>"
EOI_TOKEN = "<end_of_image>"
IMAGE_TOKEN = "<image_soft_token>"

# Special tokens: dropped by ``decode(skip_special_tokens=True)``. Ids 0..8 in this order.
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    EOS_TOKEN,
    BOS_TOKEN,
    UNK_TOKEN,
    START_OF_TURN,
    END_OF_TURN,
    BOI_TOKEN,
    EOI_TOKEN,
    IMAGE_TOKEN,
)

# The injection marker (Gemma-3's, U+321C): an ordinary vocabulary piece, as in Gemma-3.
INJECTION_CHAR = "\u321c"
#: The SentencePiece word-boundary mark (a piece ``▁cat`` is `` cat``).
SPACE = "\u2581"
#: Tag names the templates use; each tag is several pieces (``<``, name, ``>``).
TAG_WORDS: tuple[str, ...] = ("concept", "explanation", "text", "summary")

# Released AV wording (kitft/natural_language_autoencoders docs/inference.md).
AV_TEMPLATE = (
    "You are a meticulous AI researcher conducting an important investigation into activation "
    "vectors from a language model. Your overall task is to describe the semantic content of that "
    "activation vector.\n\n"
    "We will pass the vector enclosed in <concept> tags into your context. You must then produce "
    "an explanation for the vector, enclosed within <explanation> tags. The explanation consists "
    "of 2-3 text snippets describing that vector.\n\n"
    "Here is the vector:\n\n"
    "<concept>{injection_char}</concept>\n\n"
    "Please provide an explanation."
)
AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"
#: Where the subject's top next-token probability is at least this, the AV names its
#: prediction as *the* continuation; below it, as one of several (see ``describe.py``).
CONFIDENT = 0.5

# How the AV names a special token (they vanish under ``decode(skip_special_tokens=True)``):
# with plain words (``start of text``). Every other token is quoted as it decodes.
TOKEN_NAMES: dict[str, str] = {
    PAD_TOKEN: "empty padding",
    EOS_TOKEN: "end of text",
    BOS_TOKEN: "start of text",
    UNK_TOKEN: "unknown word",
    START_OF_TURN: "start of turn",
    END_OF_TURN: "end of turn",
    BOI_TOKEN: "start of image",
    EOI_TOKEN: "end of image",
    IMAGE_TOKEN: "image part",
}

PUNCTUATION: tuple[str, ...] = (*".,:;!?-'\"()<>/", "</", INJECTION_CHAR)
DIGITS: tuple[str, ...] = tuple("0123456789")

# Words the chat template and the templates above need (besides CONTENT_WORDS).
_SCAFFOLD_WORDS = "user model system assistant probe token"

# A few hundred ordinary English words: the subject's "text".
# fmt: off
CONTENT_WORDS: tuple[str, ...] = (
    "the", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with", "as",
    "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "hot", "word",
    "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up",
    "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if",
    "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these",
    "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could",
    "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water",
    "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new",
    "work", "part", "take", "get", "place", "made", "live", "where", "after", "back", "little",
    "only", "round", "man", "year", "came", "show", "every", "good", "me", "give", "our", "under",
    "name", "very", "through", "just", "form", "sentence", "great", "think", "say", "help", "low",
    "line", "differ", "turn", "cause", "much", "mean", "before", "move", "right", "boy", "old",
    "too", "same", "tell", "does", "set", "three", "want", "air", "well", "also", "play", "small",
    "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land", "here",
    "must", "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went",
    "light", "kind", "off", "need", "house", "picture", "try", "us", "again", "animal", "point",
    "mother", "world", "near", "build", "self", "earth", "father", "head", "stand", "own", "page",
    "should", "country", "found", "answer", "school", "grow", "study", "still", "learn", "plant",
    "cover", "food", "sun", "four", "between", "state", "keep", "eye", "never", "last", "let",
    "thought", "city", "tree", "cross", "farm", "hard", "start", "might", "story", "saw", "far",
    "sea", "draw", "left", "late", "run", "while", "press", "close", "night", "real", "life",
    "few", "north", "open", "seem", "together", "next", "white", "children", "begin", "got",
    "walk", "example", "ease", "paper", "group", "always", "music", "those", "both", "mark",
    "often", "letter", "until", "mile", "river", "car", "feet", "care", "second", "book", "carry",
    "took", "science", "eat", "room", "friend", "began", "idea", "fish", "mountain", "stop",
    "once", "base", "hear", "horse", "cut", "sure", "cat", "apple", "bread", "cloud", "garden",
    "forest", "winter", "summer", "bridge", "window", "chair", "coffee", "doctor", "engine",
    "flower", "glass", "heart", "island", "lamp", "market", "nurse", "orange", "pencil", "queen",
    "rabbit", "silver", "tiger", "violin", "yellow", "zebra",
    "sat", "mat", "red", "dog", "blue", "green", "black", "sky", "ran", "quick", "brown", "fox",
    "jumps", "lazy",
)
# fmt: on


# Words of the toy in-context task (nla_lens.toy.tasks) the list above lacked.
TASK_WORDS: tuple[str, ...] = (
    "owl", "bear", "wolf", "mouse", "duck", "goat", "frog", "lion",
    "park", "kitchen", "cave", "lake",
)  # fmt: skip


# Words the toy AV's explanations use (nla_lens.toy.describe) that the lists above lack.
EXPLANATION_WORDS: tuple[str, ...] = (
    "facts", "listing", "animals", "places", "so", "far", "question", "about", "random",
    "words", "chat", "reading", "phrase", "fact", "next", "maybe", "perhaps", "or", "either",
    "likely", "unsure", "nothing", "yet", "turn", "user", "model", "text", "start", "token",
    "piece", "comes", "followed", "none", "starts", "speaks", "then", "where", "now", "asks", "asking", "sentence", "word", "last",
)  # fmt: skip


def _template_words() -> list[str]:
    text = " ".join([AV_TEMPLATE, AR_TEMPLATE, _SCAFFOLD_WORDS, *TAG_WORDS])
    for tag in ("{injection_char}", "{explanation}"):
        text = text.replace(tag, " ")
    return re.findall(r"[A-Za-z]+", text)


def words() -> list[str]:
    """Every word of the vocabulary, de-duplicated, in a fixed order."""
    names = " ".join(TOKEN_NAMES.values()).split()
    return list(
        dict.fromkeys([*CONTENT_WORDS, *_template_words(), *names, *TASK_WORDS, *EXPLANATION_WORDS])
    )


def base_vocabulary() -> list[str]:
    """The ordinary (non-special) pieces: newline and the bare space mark, then each
    punctuation mark, digit and word bare and after a space (``cat``, ``▁cat``)."""
    units = [*PUNCTUATION, *DIGITS, *words()]
    return ["\n", SPACE, *[p for u in units for p in (u, SPACE + u)]]
