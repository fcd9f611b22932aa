"""Shared setup of the nla_lens tutorials: the ONE switch between the toy pair and Gemma-3-12B.

Every tutorial does ``from _setup import ...`` and runs the same code either way:

* default: the toy NLA pair shipped inside nla_lens (``nla_lens.toy.checkpoints()``):
  a tiny Gemma-3 subject (d_model 64, 5 blocks, trained on an in-context recall
  task, random text and chats; a SentencePiece-like tokenizer of a few hundred
  common English words), an AV that writes three lines about a layer-3 residual
  (the context, the phrase being read, the token and what comes next), and its
  AR. Offline, CPU, seconds.
* ``NLA_LENS_REAL=1``: the released Gemma-3-12B pair (subject
  ``google/gemma-3-12b-it`` as ``Gemma3ForConditionalGeneration`` in bf16, AV
  ``kitft/nla-gemma3-12b-L32-av``, AR ``kitft/nla-gemma3-12b-L32-ar``). Needs a
  GPU (about 65 GB of weights in bf16 for the three models), network access or a
  warm Hugging Face cache, and ``HF_TOKEN`` for an account that accepted the
  Gemma licence. Optional pins: ``NLA_LENS_SUBJECT_REVISION``,
  ``NLA_LENS_AV_REVISION``, ``NLA_LENS_AR_REVISION`` (a branch, tag or commit).

Plots and HTML go to ``$NLA_LENS_TUTORIAL_OUT`` (default ``tutorials/_out/``).
The example text uses only words the toy tokenizer knows, so it reads the same
on both pairs.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

REAL: bool = os.environ.get("NLA_LENS_REAL", "0").strip().lower() in {"1", "true", "yes"}
if not REAL:
    # The toy pair is local; never let a tutorial reach for the network by accident.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from nla_lens import NLA, RELEASED_PAIRS

IN_NOTEBOOK = "ipykernel" in sys.modules
if not IN_NOTEBOOK:  # scripts draw off-screen, into files
    import matplotlib

    matplotlib.use("Agg")

#: The released pair the tutorials switch to with NLA_LENS_REAL=1.
REAL_PAIR = RELEASED_PAIRS["gemma3-12b-L32"]
SUBJECT_REVISION = os.environ.get("NLA_LENS_SUBJECT_REVISION") or None
AV_REVISION = os.environ.get("NLA_LENS_AV_REVISION") or None
AR_REVISION = os.environ.get("NLA_LENS_AR_REVISION") or None

OUT = Path(os.environ.get("NLA_LENS_TUTORIAL_OUT") or Path(__file__).resolve().parent / "_out")

# ---- example text (every word is in the toy vocabulary; see check_known_words) ----
#: A plain sentence for quickstarts.
EXAMPLE_TEXT = "my mother and father live in a small house near the sea"
#: A clean / corrupted pair of equal token length that differ in one word, and the
#: continuation each one makes likely (a logit difference to patch on).
CLEAN_TEXT = "my friend has a cat in the garden . the animal in the garden is a"
CORRUPT_TEXT = "my friend has a horse in the garden . the animal in the garden is a"
CLEAN_WORD, CORRUPT_WORD = "cat", "horse"
#: Prompts of the toy subject's recall task (``nla_lens.toy.tasks()``): facts about
#: where animals are, then a question; the subject answers with the place.
TASK_TEXTS = (
    "the cat is in my house. the dog is in the river. the owl is in a cave. the dog is in the",
    "the frog is in his garden. the lion is in our city. the frog is in her",
    "the bear is in the forest. the duck is in a lake. the fox is in my school. the fox is in the",
    "the goat is in their farm. the wolf is in the mountain. the goat is in the",
)
#: A short chat for transcripts.
CHAT = [
    {"role": "user", "content": "where does the queen live ? in a big white house near the river ."}
]

#: A cap on explanation length. The released AVs write 2-3 snippets (trained with
#: 200 new tokens); the toy AV writes three short lines (30-60 tokens).
MAX_NEW_TOKENS = 200 if REAL else 96

Framework = Literal["hf", "transformer_lens", "nnsight"]


def device() -> torch.device:
    return torch.device("cuda" if REAL else "cpu")


def dtype() -> torch.dtype:
    return torch.bfloat16 if REAL else torch.float32


def out_dir() -> Path:
    """Where tutorials write plots and HTML (created on demand)."""
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


def save_figure(fig: Any, name: str) -> Path:
    """Save a matplotlib figure under the output dir (and show it in a notebook), then close it."""
    import matplotlib.pyplot as plt

    path = out_dir() / name
    fig.savefig(path, dpi=120, bbox_inches="tight")
    if IN_NOTEBOOK:  # as a PNG, whatever matplotlib backend the kernel runs
        from IPython.display import Image, display

        display(Image(data=path.read_bytes(), format="png"))
    plt.close(fig)
    print("wrote", path)
    return path


def show(obj: Any) -> None:
    """Show a result: as a rich table / page in a notebook, as text in a script."""
    if IN_NOTEBOOK:
        from IPython.display import display

        display(obj)
    elif hasattr(obj, "to_string"):
        print(obj.to_string(index=False) if hasattr(obj, "columns") else obj.to_string())
    else:
        print(obj)


def save_html(html: str, name: str) -> Path:
    """Write an HTML fragment under the output dir (and render it in a notebook)."""
    path = out_dir() / name
    path.write_text(html, encoding="utf-8")
    if IN_NOTEBOOK:
        from IPython.display import HTML, display

        display(HTML(html))
    print("wrote", path)
    return path


def _toy() -> Any:
    from nla_lens.toy import checkpoints

    return checkpoints()


def describe(word: str) -> str:
    """A description of ``word`` in the style of the pair's own explanations.

    The toy AR reads ``nla_lens.toy.describe_next(WORD)`` (``next comes WORD``, the
    wording of its explanations' third line) as "the model is about to say WORD";
    the released AVs write a few prose snippets about the text around the token.
    """
    if REAL:
        return f"The text mentions a {word}. The model is about to say {word}."
    from nla_lens.toy import describe_next

    return describe_next(word)


def load_pair() -> NLA:
    """The NLA pair (AV + AR) the tutorials read with."""
    if REAL:
        return NLA.from_pretrained(
            REAL_PAIR.av,
            REAL_PAIR.ar,
            device=device(),
            dtype=dtype(),
            revision=AV_REVISION,
            ar_revision=AR_REVISION,
        )
    ck = _toy()
    return NLA.from_pretrained(ck.av, ck.ar, device="cpu")


@dataclass
class Subject:
    """The subject model in one framework, its tokenizer, and the Hugging Face module inside."""

    model: Any
    tokenizer: Any
    hf: Any
    framework: Framework

    @property
    def kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments nla_lens needs for this framework: a plain Hugging Face
        model carries no tokenizer, so text inputs need ``tokenizer=``."""
        return {"tokenizer": self.tokenizer} if self.framework == "hf" else {}


def load_subject(framework: Framework = "hf") -> Subject:
    """The subject model (the multimodal Gemma-3 layout, as google/gemma-3-12b-it loads),
    raw, wrapped in a TransformerBridge, or wrapped for nnsight."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    if REAL:
        name: str | Path = REAL_PAIR.subject
        hf = AutoModelForImageTextToText.from_pretrained(
            name, dtype=dtype(), device_map=str(device()), revision=SUBJECT_REVISION
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(name, revision=SUBJECT_REVISION)
    else:
        name = _toy().subject_multimodal
        hf = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype()).eval()
        tokenizer = AutoTokenizer.from_pretrained(name)
    if framework == "hf":
        return Subject(hf, tokenizer, hf, framework)
    if framework == "transformer_lens":
        from nla_lens.subjects import boot_bridge

        with warnings.catch_warnings():  # TransformerLens is chatty about optional processors
            warnings.simplefilter("ignore")
            bridge = boot_bridge(hf, tokenizer)
        return Subject(bridge, bridge.tokenizer, hf, framework)
    if framework == "nnsight":
        from nnsight import TransformersModel

        model = TransformersModel(hf, task="text-generation", tokenizer=tokenizer)
        return Subject(model, tokenizer, hf, framework)
    raise ValueError(f"framework must be 'hf', 'transformer_lens' or 'nnsight', got {framework!r}")


def check_known_words(tokenizer: Any, *texts: str) -> None:
    """Fail loudly if an example text hits the tokenizer's unknown token (the toy's
    vocabulary is small: a word it lacks becomes <unk> and reads as nothing)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if unk in ids:
            toks = tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(f"{text!r} has words the tokenizer does not know: {toks}")


def single_token_id(tokenizer: Any, word: str) -> int:
    """The id of ``word`` as a continuation (`` word``); it must be one token."""
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"{word!r} is {len(ids)} tokens for this tokenizer ({ids}); pick a one-token word."
        )
    return int(ids[0])


def expect(claim: str, ok: bool) -> bool:
    """Print a stated expectation and whether this run meets it (``tests/test_tutorials.py``
    checks that every tutorial's expectations are met on the toy pair)."""
    print(f"[expect] {claim}: {'met' if ok else 'NOT MET'}")
    return ok


def banner(title: str) -> None:
    """Say which pair a tutorial runs on."""
    which = f"REAL: {REAL_PAIR.subject} + {REAL_PAIR.av}" if REAL else "toy pair (offline, CPU)"
    print(f"== {title} | {which} | outputs -> {OUT}")
