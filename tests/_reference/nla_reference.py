"""An independent, one-vector-at-a-time implementation of the published NLA recipe.

Written from the recipe alone (docs/recipe.md; the shared NLA_CONTRACT.md it was first written from), for equivalence tests. It must not import
anything from nla_lens. Deliberately plain: no batching, no KV cache (each
decoding step re-runs the whole sequence), embeddings looked up from the raw
safetensors table and scaled by hand.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

_EXPL = re.compile(r"<explanation>(.*?)</explanation>", re.DOTALL)
_SCALED = {"gemma", "gemma2", "gemma3", "gemma3_text"}


def _scale(value, d: int) -> float:
    return math.sqrt(d) if value == "sqrt_d_model" else float(value)


class ReferenceAV:
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.meta = yaml.safe_load((path / "nla_meta.yaml").read_text())
        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        cfg = json.loads((path / "config.json").read_text())
        text_cfg = cfg.get("text_config", cfg)
        d = text_cfg["hidden_size"]
        self.embed_scale = (
            math.sqrt(d) if text_cfg.get("model_type", cfg["model_type"]) in _SCALED else 1.0
        )
        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            key = next(k for k in f.keys() if k.endswith("embed_tokens.weight"))  # noqa: SIM118
            self.table = f.get_tensor(key).float()
        self.inj_scale = _scale(self.meta["extraction"]["injection_scale"], d)
        t = self.meta["tokens"]
        self.inj_id, self.left, self.right = (
            t["injection_token_id"],
            t["injection_left_neighbor_id"],
            t["injection_right_neighbor_id"],
        )
        templates = self.meta["prompt_templates"]
        content = (templates.get("av") or templates["actor"]).format(
            injection_char=t["injection_char"]
        )
        enc = self.tok.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
        )
        self.ids = list(enc["input_ids"] if hasattr(enc, "keys") else enc)
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | {self.tok.eos_token_id}

    def _embed(self, ids: list[int]) -> torch.Tensor:
        return self.table[torch.tensor(ids)] * self.embed_scale

    @torch.no_grad()
    def generate(self, vector: torch.Tensor, max_new_tokens: int = 40) -> str:
        emb = self._embed(self.ids)
        sites = [
            p
            for p, t in enumerate(self.ids)
            if t == self.inj_id
            and 0 < p < len(self.ids) - 1
            and self.ids[p - 1] == self.left
            and self.ids[p + 1] == self.right
        ]
        if len(sites) != 1:
            raise RuntimeError(f"expected one injection site, found {len(sites)}")
        v = vector.float()
        emb[sites[0]] = v * (self.inj_scale / v.norm())
        new: list[int] = []
        for _ in range(max_new_tokens):
            logits = self.model(inputs_embeds=emb[None]).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt in self.eos:
                break
            new.append(nxt)
            emb = torch.cat([emb, self._embed([nxt])])
            if "</explanation>" in self.tok.decode(new, skip_special_tokens=True):
                break
        return self.tok.decode(new, skip_special_tokens=True)

    @staticmethod
    def extract(raw: str) -> str:
        m = _EXPL.search(raw)
        return m.group(1).strip() if m else raw.strip()


class ReferenceAR:
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.meta = yaml.safe_load((path / "nla_meta.yaml").read_text())
        self.tok = AutoTokenizer.from_pretrained(str(path))
        full = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        self.backbone = full.model
        self.backbone.norm = torch.nn.Identity()
        w = load_file(str(path / "value_head.safetensors"))["weight"].float()
        self.head = w
        d = w.shape[0]
        self.mse_scale = _scale(self.meta["extraction"].get("mse_scale", "sqrt_d_model"), d)
        templates = self.meta["prompt_templates"]
        self.template = templates.get("ar") or templates["critic"]

    @torch.no_grad()
    def reconstruct(self, explanation: str) -> torch.Tensor:
        ids = self.tok(
            self.template.format(explanation=explanation),
            return_tensors="pt",
            add_special_tokens=True,
        )
        h = self.backbone(input_ids=ids["input_ids"]).last_hidden_state[0, -1]
        return h @ self.head.T

    def score(self, explanation: str, original: torch.Tensor) -> tuple[float, float]:
        pred = self.reconstruct(explanation)
        p = pred / pred.norm() * self.mse_scale
        g = original.float() / original.float().norm() * self.mse_scale
        return float(((p - g) ** 2).mean()), float(p @ g / (p.norm() * g.norm()))
