"""``nla-lens explore``: the local explorer (a web page on 127.0.0.1 with a session token)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ExplorerError, NLAError
from ._pair import TOY, add_pair_args, resolve
from ._sampling import add_sampling_args, sampling_from


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explore",
        help="click through a prompt's tokens and watch each explanation stream in",
        description="Serve the explorer on the loopback address: the token strip of a prompt "
        "(and of a generated reply); a click streams that token's explanation segment by "
        "segment with each prefix's score, the baseline and the fit flag; saved transcripts "
        "and patching frames open as views. Needs the 'explore' extra. Nothing is loaded "
        "from the internet: every asset is served by the app.",
        epilog="Offline on the toy: nla-lens explore --subject toy --av toy --ar toy "
        "(prints the URL to open, with its session token).",
    )
    p.add_argument("text", nargs="?", default=None,
                   help="the user message (plain text with --plain); default on the toy: one "
                        "of its task prompts")  # fmt: skip
    add_pair_args(p, subject=True)
    p.add_argument(
        "--plain", action="store_true", help="read the text as-is, not as a chat message"
    )
    p.add_argument("--chat", type=Path, help="a JSON file with a chat: [{role, content}, ...]")
    p.add_argument(
        "--reply-tokens", type=int, default=0, help="also generate and show N reply tokens"
    )
    p.add_argument("--table", type=Path, action="append", default=[],
                   help="a saved table to open as a view (repeatable): a transcript's frame "
                        "(nla-lens transcript --csv) or an activation_patching frame (.csv/.parquet)")  # fmt: skip
    p.add_argument("--patching", action="store_true",
                   help="on the toy: also patch one of its task pairs and show the grid")  # fmt: skip
    p.add_argument("--stop", type=int, default=None, help="stop each explanation after N segments")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than the loopback address")  # fmt: skip
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    add_sampling_args(p)
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


def _chat(path: Path) -> list[dict[str, str]]:
    try:
        chat = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExplorerError(f"--chat {path}: not a readable JSON file ({exc}).") from exc
    if not isinstance(chat, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in chat
    ):
        raise ExplorerError(f"--chat {path}: expected a JSON list of {{role, content}} messages.")
    return chat


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..explore import make_explorer, serve
    from ..explore.server import check_address
    from ..lens import NLA

    check_address(args.host, args.port, allow_remote=args.allow_remote)  # before any model loads

    av, ar, subject = (
        resolve(args.av, "av"),
        resolve(args.ar, "ar"),
        resolve(args.subject, "subject"),
    )
    if av is None or subject is None:
        raise NLAError("explore needs --av and --subject (or 'toy' for the shipped pair).")
    toy = args.subject == TOY
    if args.patching and not toy:
        raise ExplorerError("--patching patches a toy task pair; for your model, save an "
                            "activation_patching frame and pass it with --table.")  # fmt: skip
    nla = NLA.from_pretrained(av, ar, device=args.device)
    tok = AutoTokenizer.from_pretrained(subject)
    model = (
        AutoModelForCausalLM.from_pretrained(subject, dtype=torch.float32).to(args.device).eval()
    )
    pair = None
    if toy:
        from ..toy import tasks

        pair = tasks(1)[0]
    if args.chat is not None:
        inputs: Any = _chat(args.chat)
    elif args.text is not None:
        inputs = args.text if args.plain else [{"role": "user", "content": args.text}]
    elif pair is not None:
        inputs = pair.clean
    else:
        raise ExplorerError("give a prompt (TEXT or --chat FILE) to explore.")
    frame = None
    if args.patching and pair is not None:
        frame = nla.activation_patching(
            model, pair.clean, pair.corrupted, tokenizer=tok, layers=list(range(nla.layer + 2)),
            positions=[pair.position, pair.control_position, -1],
            answer_tokens=(pair.clean_answer_id, pair.corrupted_answer_id),
            max_new_tokens=args.max_new_tokens, progress=False,
        )  # fmt: skip
    explorer = make_explorer(
        nla, model, inputs, tokenizer=tok, reply_tokens=args.reply_tokens, patching=frame,
        files=args.table, sampling=sampling_from(args), stop=args.stop,
    )  # fmt: skip
    running = serve(explorer, host=args.host, port=args.port, allow_remote=args.allow_remote)
    print(f"nla-lens explore: serving on {running.base} (Ctrl-C stops it). Open:", flush=True)
    print(running.url, flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(running.url)
    running.wait()
    print("nla-lens explore: stopped", file=sys.stderr)
    return 0
