"""Read answers: JSON fields, labels from a fixed set, probabilities from logprobs.

Parsing is strict: an answer that names no label of the set, or names one
ambiguously, is an error (recorded per item), never a guess.
"""

import json
import math
import re

import numpy as np


class ParseError(ValueError):
    """The model's answer could not be read; the message says why."""


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def message_content(response):
    """Text of the first choice, with a ParseError for a missing or cut-off answer."""
    choice = response["choices"][0]
    content = (choice.get("message") or {}).get("content")
    if not content:
        raise ParseError(f"the answer is empty (finish_reason={choice.get('finish_reason')!r})")
    return content


def parse_json_answer(content, finish_reason=None):
    """The JSON object in ``content`` (a code fence or text around one object is tolerated)."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        try:
            value = json.loads(text[start : end + 1]) if 0 <= start < end else None
        except ValueError:
            value = None
        if value is None:
            hint = " (cut off at max_tokens: raise max_tokens)" if finish_reason == "length" else ""
            raise ParseError(f"the answer is not valid JSON{hint}: {content[:200]!r}") from None
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {content[:200]!r}")
    return value


def match_label(value, label_names):
    """Index of ``value`` in ``label_names``: exact, then case- and space-insensitive."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ParseError(f"the label {value!r} is not a string")
    value = str(value)
    if value in label_names:
        return label_names.index(value)
    folded = [_fold(name) for name in label_names]
    if folded.count(_fold(value)) == 1:
        return folded.index(_fold(value))
    raise ParseError(f"the label {value[:100]!r} is not one of {list(label_names)}")


def find_label_in_text(content, label_names):
    """A label named by a plain-text answer: the whole answer, or the one label it mentions."""
    stripped = content.strip().strip("\"'`.*: \n")
    try:
        return match_label(stripped, label_names)
    except ParseError:
        pass
    mentioned = [
        index
        for index, name in enumerate(label_names)
        if re.search(rf"(?<!\w){re.escape(_fold(name))}(?!\w)", _fold(content))
    ]
    if len(mentioned) == 1:
        return mentioned[0]
    which = "no label" if not mentioned else f"several labels {[label_names[i] for i in mentioned]}"
    raise ParseError(f"the answer names {which} of {list(label_names)}: {content[:200]!r}")


def parse_percent(value):
    """A probability from a percentage answer (0..100), or ParseError."""
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise ParseError(f"expected a percentage, got {value!r}") from None
    if not (math.isfinite(number) and 0 <= number <= 100):
        raise ParseError(f"expected a percentage in 0..100, got {value!r}")
    return number / 100.0


def label_distribution(response, content, value_start, label_names, answered):
    """Class probabilities from ``top_logprobs``, renormalised over the label set.

    Walks the tokens that spell the answered label (starting at character
    ``value_start`` of ``content``). The answered label gets the probability of
    its own tokens; an alternative token at some position gives its probability
    (times that of the tokens before it) to the labels it starts and the answer
    does not. Labels no listed token starts get 0. Servers differ: OpenAI's
    logprobs follow the grammar, llama.cpp's are the raw model's; both are
    renormalised over the labels.

    Returns None when the response has no usable logprobs.
    """
    tokens = ((response["choices"][0].get("logprobs") or {}).get("content")) or []
    spelled = "".join(t.get("token", "") for t in tokens)
    # some servers strip whitespace or a code fence from the content: find it in the tokens
    offset = spelled.find(content) if tokens else -1
    if offset < 0:
        return None
    content, value_start = spelled, value_start + offset
    answered_name = label_names[answered]
    value_end = value_start + len(answered_name)
    mass = np.zeros(len(label_names))
    path_proba, position = 1.0, 0
    for token in tokens:
        start, position = position, position + len(token["token"])
        if position <= value_start:
            continue
        if start >= value_end:
            break
        lead = content[start:value_start] if start < value_start else ""
        consumed = content[value_start : max(start, value_start)]
        actual = consumed + token["token"][len(lead) :]
        for alternative in token.get("top_logprobs") or []:
            text = alternative.get("token", "")
            if text == token["token"] or not text.startswith(lead) or len(text) == len(lead):
                continue
            spelled = consumed + text[len(lead) :]
            takers = [
                index
                for index, name in enumerate(label_names)
                if _starts(name, spelled) and not _starts(name, actual)
            ]
            for index in takers:
                mass[index] += path_proba * math.exp(alternative["logprob"]) / len(takers)
        path_proba *= math.exp(token["logprob"])
    mass[answered] += path_proba
    total = mass.sum()
    if not (math.isfinite(total) and total > 0):
        return None
    return mass / total


def _starts(name, spelled):
    """Whether a label is consistent with the characters generated so far."""
    return name.startswith(spelled) or (
        spelled.startswith(name) and not spelled[len(name) :][:1].isalnum()
    )


def _fold(text):
    return " ".join(str(text).lower().split())
