"""Talk to a trained recommender: name what you liked in plain words, get real catalogue items back.

    sid4llm chat --model outputs/quickstart/model                      # interactive
    sid4llm chat --model outputs/quickstart/model --prompt "I want a funny animated movie for my kids"
    sid4llm chat --model me/my-recommender --history "Fargo; The Matrix"  # a Hub id works too

Ask in words ("a funny animated movie for my kids", "something like the matrix but scarier") or name titles
(exactly or fuzzily; quotes help for one-word titles): the list is the model's trie-constrained decoding of the
request, and the whole instruct LM writes the words around it. In the REPL: /history shows what was understood,
/reset starts over, /quit leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cli import run_command
from ..pipeline import RecommendationPipeline


@dataclass
class ChatArguments:
    model: str = field(metadata={"help": "A trained recommender folder (sid4llm finetune) or Hub id."})
    prompt: str | None = field(default=None, metadata={"help": "Answer this one message and exit."})
    history: str | None = field(default=None, metadata={"help": "Items you liked, separated by ';' (titles or ids)."})
    k: int = field(default=5, metadata={"help": "Items to recommend per turn."})
    max_new_tokens: int = field(default=40, metadata={"help": "Most tokens of the words the instruct LM writes per answer."})


def main(args: ChatArguments) -> None:
    pipe = RecommendationPipeline.from_pretrained(args.model)
    history = [h.strip() for h in (args.history or "").split(";") if h.strip()]  # unknown names: said in the reply
    messages: list[dict] = []

    def turn(text: str) -> None:
        messages.append({"role": "user", "content": text})
        reply = pipe.chat(messages, k=args.k, history=history, max_new_tokens=args.max_new_tokens)
        messages.append(reply)
        print(f"\nassistant> {reply['content']}\n")

    if args.prompt is not None:
        turn(args.prompt)
        return
    print(f"Chatting with {args.model} ({len(pipe.codebook):,} items). /history, /reset, /quit.")
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not text:
            continue
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            messages.clear()
            print("(conversation cleared)")
            continue
        if text == "/history":
            understood = messages[-1]["history"] if messages else []
            print("understood so far:", "; ".join(i["title"] for i in understood) or "nothing yet")
            continue
        turn(text)


ARGUMENTS = (ChatArguments,)


def run(argv: list[str] | None = None) -> None:
    run_command(main, ARGUMENTS, argv, log_level=30)
