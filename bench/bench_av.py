"""AV throughput: 64 toy vectors in one batched ``explain`` vs the reference client's loop.

The baseline re-implements the reference client's one-vector-at-a-time loop
independently: for each vector, embed the AV prompt, rescale and inject the
vector, and call Hugging Face ``generate`` with batch size 1 (greedy, same
``max_new_tokens``, stopping on EOS). Both are timed in this run on the same
vectors; the explanations must agree.

    python bench/bench_av.py [--n 64] [--max-new-tokens 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from nla_lens import NLA, toy
from nla_lens.core.explanation import extract_explanation

GOAL = 8.0  # batched / one-at-a-time throughput


def toy_vectors(ck: toy.ToyCheckpoints, layer: int, n: int) -> torch.Tensor:
    """Layer-K residuals of the toy subject on random content tokens (positions >= 2)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ck.subject))
    subject = AutoModelForCausalLM.from_pretrained(str(ck.subject), dtype=torch.float32).eval()
    special = set(tok.all_special_ids) | set(tok.get_added_vocab().values())
    vocab = torch.tensor(sorted(i for i in tok.get_vocab().values() if i not in special))
    g = torch.Generator().manual_seed(0)
    ids = vocab[torch.randint(len(vocab), (n, 12), generator=g)]
    ids = torch.cat([torch.full((n, 1), tok.bos_token_id), ids], dim=1)
    with torch.inference_mode():
        hs = subject(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
    pos = torch.randint(2, 13, (n,), generator=g)
    return hs[torch.arange(n), pos].clone()


@torch.inference_mode()
def reference_loop(nla: NLA, vectors: torch.Tensor, max_new_tokens: int) -> list[str]:
    """One vector at a time, as the reference client does (with HF generate in place of SGLang)."""
    av = nla.av
    model, tok = av.model, av.tokenizer
    assert model is not None
    embed = model.get_input_embeddings()
    ids = torch.tensor([av.prompt_ids])
    pos, scale = av.injection_position, float(av.meta.injection_scale or 0.0)
    eos = model.generation_config.eos_token_id
    eos_ids = sorted({*(eos if isinstance(eos, list) else [eos]), tok.eos_token_id} - {None})
    texts = []
    for v in vectors:
        emb = embed(ids).clone()  # the model's own (scaled) embedding
        v32 = v.float()
        emb[0, pos] = v32 * (scale / v32.norm())
        out = model.generate(
            inputs_embeds=emb, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
            do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=eos_ids,
            pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        row = out[0].tolist()
        end = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
        texts.append(tok.decode(row[:end], skip_special_tokens=True))
    return texts


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ck = toy.checkpoints()
    nla = NLA.from_pretrained(ck.av, device="cpu", dtype=torch.float32)
    vectors = toy_vectors(ck, nla.layer, args.n)
    nla.explain(vectors[:2], max_new_tokens=args.max_new_tokens)  # warm-up
    reference_loop(nla, vectors[:2], args.max_new_tokens)
    t_batch, t_loop = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        batched = nla.explain(
            vectors, max_new_tokens=args.max_new_tokens, batch_size=args.n, progress=False
        )
        t_batch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop = reference_loop(nla, vectors, args.max_new_tokens)
        t_loop.append(time.perf_counter() - t0)
    agree = sum(e.text == extract_explanation(r)[0] for e, r in zip(batched, loop, strict=True))
    mb, ml = statistics.median(t_batch), statistics.median(t_loop)
    # Each repeat times both paths back to back; the median of the per-repeat ratios
    # cancels slow drift in machine load.
    ratio = statistics.median(lo / b for lo, b in zip(t_loop, t_batch, strict=True))
    print(f"bench_av: toy AV (d={nla.d_model}), {args.n} vectors, greedy, max_new_tokens={args.max_new_tokens}, "
          f"median of {args.repeats}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'path':<40} {'seconds':>8} {'vectors/s':>10}")
    print(f"{'reference loop (batch 1 per vector)':<40} {ml:8.2f} {args.n / ml:10.1f}")
    print(f"{'NLA.explain (one batched call)':<40} {mb:8.2f} {args.n / mb:10.1f}")
    print(f"explanations equal: {agree}/{args.n}; ratio of medians {ml / mb:.2f}")
    print(f"ratio={ratio:.2f} name=av_batched_vs_reference_loop goal>={GOAL}")
    return 0 if ratio >= GOAL and agree == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
