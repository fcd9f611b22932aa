"""Run VLLMEngineBackend (the offline vLLM engine) inside the vLLM venv.

Usage: python vllm_engine_script.py MODEL_DIR EMBEDS.pt OUT.json [MAX_NEW_TOKENS]
Reads a list of [T, d] prompt embeddings, decodes greedily, writes texts,
token ids and finish reasons as JSON. Started by tests/serving/test_real_vllm.py.
"""

from __future__ import annotations

import json
import sys
import time

import torch


def main() -> None:
    model_dir, embeds_path, out_path = sys.argv[1:4]
    max_new = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    from nla_lens.backends.vllm import VLLMEngineBackend
    from nla_lens.core.backend import Sampling

    embeds = torch.load(embeds_path, weights_only=True)
    t0 = time.perf_counter()
    backend = VLLMEngineBackend(
        model_dir,
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        kv_cache_memory_bytes=256 * 2**20,
    )
    t1 = time.perf_counter()
    outs = backend.generate(embeds, Sampling(temperature=0.0, max_new_tokens=max_new))
    t2 = time.perf_counter()
    result = {
        "outputs": [{"text": o.text, "token_ids": list(o.token_ids), "finish_reason": o.finish_reason} for o in outs],
        "engine_start_s": t1 - t0, "generate_s": t2 - t1,
    }  # fmt: skip
    with open(out_path, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
