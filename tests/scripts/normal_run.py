"""A normal run (load the toy pair and subject in three frameworks, explain a run in each,
a transcript with a generated reply); prints every warning raised meanwhile, one per line."""

from __future__ import annotations

import warnings

import nnsight
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nla_lens import NLA
from nla_lens.subjects import boot_bridge
from nla_lens.toy import checkpoints


def load() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(ck.subject), dtype=torch.float32).eval()


ck = checkpoints()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    nla = NLA.from_pretrained(ck.av, ck.ar, device="cpu")
    tok = AutoTokenizer.from_pretrained(str(ck.subject))
    hf = load()
    bridge = boot_bridge(load(), name=str(ck.subject))
    nns = nnsight.TransformersModel(load(), task="text-generation", tokenizer=tok)
    for model, kw in ((hf, {"tokenizer": tok}), (bridge, {}), (nns, {})):
        nla.explain_run(model, "the cat is in my house", positions=[-1], max_new_tokens=12, **kw)
    chat = [{"role": "user", "content": "the cat"}]
    nla.transcript(hf, chat, tokenizer=tok, reply_tokens=3, max_new_tokens=12)
for w in caught:
    print("WARNING", w.category.__name__, str(w.message)[:150], w.filename, w.lineno)
print("done")
