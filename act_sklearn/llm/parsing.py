"""Read answers: JSON fields, labels from a fixed set, probabilities from logprobs.

Parsing is strict: an answer that names no label of the set, or names one
ambiguously, is an error (recorded per item), never a guess. Three rules make it
exact rather than brittle:

- An answer cut off (at ``max_tokens``) after its required fields is read from
  the fields it completed; a field cut off is never completed by guessing.
- Labels match whatever their case and spacing (:func:`match_label`), in the
  answer's text as in the alternative tokens of its logprobs.
- An answer that repeats the text-mode prompt's example, whose values are
  placeholders (:data:`~act_sklearn.llm.prompts.EXAMPLE_PLACEHOLDERS`), or a
  sentence of the system prompt (:data:`~act_sklearn.llm.prompts.ECHO_MARKERS`),
  is refused: the model echoed its prompt and gave no answer.
"""

import json
import math
import re

import numpy as np

from .prompts import ECHO_MARKERS, EXAMPLE_PLACEHOLDERS


class ParseError(ValueError):
    """The model's answer could not be read; the message says why."""


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_DECODER = json.JSONDecoder()
_JSON_WHITESPACE = " \t\n\r"
_LITERALS = ("true", "false", "null")
_NUMBER_PREFIX = re.compile(r"-?(?:0|[1-9]\d*)?(?:\.\d*)?(?:[eE][-+]?\d*)?")


def message_content(response):
    """Text of the first choice, with a ParseError for a missing or cut-off answer."""
    choice = response["choices"][0]
    content = (choice.get("message") or {}).get("content")
    if not content:
        raise ParseError(f"the answer is empty (finish_reason={choice.get('finish_reason')!r})")
    return content


def parse_json_answer(content, finish_reason=None, required=None):
    """The JSON object in ``content`` (a code fence or text around one object is tolerated).

    Parameters
    ----------
    content : str
        The answer's text.
    finish_reason : str or None, default=None
        The response's ``finish_reason``; ``"length"`` adds a hint to errors.
    required : sequence of str or None, default=None
        Fields the caller needs. With them, an object cut off before its end
        (at ``max_tokens``, or by a model that stopped) is read when each of
        these fields has a complete value: a closed string, array or object,
        ``true``, ``false``, ``null``, or a number followed by whitespace,
        ``,`` or ``}`` (a number at the very end may be cut short). Only
        complete fields are returned. None reads complete objects only.

    Returns
    -------
    answer : dict

    Raises
    ------
    ParseError
        No JSON object, or one cut off before a required field is complete.

    Examples
    --------
    A small model padding whitespace until ``max_tokens`` runs out:

    >>> parse_json_answer('{\\n \\t "label": "Hillary Clinton"\\n \\t', "length", required=["label"])
    {'label': 'Hillary Clinton'}
    >>> parse_json_answer('{"label": "Hillary Cl', "length", required=["label"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    act_sklearn.llm.parsing.ParseError: the answer was cut off inside its field 'label' (cut off at max_tokens...
    """
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    hint = " (cut off at max_tokens: raise max_tokens)" if finish_reason == "length" else ""
    try:
        value = json.loads(text)
    except ValueError:
        value = _outermost_object(text)
        if value is None and required:
            # unstripped: the whitespace after a number at the end says the number is complete
            value = _cut_off_object(_without_fence_opening(content.lstrip()), required, hint, content)
        if value is None:
            raise ParseError(f"the answer is not valid JSON{hint}: {content[:200]!r}") from None
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {content[:200]!r}")
    return value


def _outermost_object(text):
    """The object from the first ``{`` to the last ``}``, or None."""
    start, end = text.find("{"), text.rfind("}")
    if not 0 <= start < end:
        return None
    try:
        return json.loads(text[start : end + 1])
    except ValueError:
        return None


def _without_fence_opening(text):
    """``text`` without the opening line of a code fence that was never closed."""
    if text.startswith("```"):
        return text.partition("\n")[2]
    return text


def _cut_off_object(text, required, hint, content):
    """The complete fields of the cut-off object in ``text``, if they include ``required``."""
    try:
        fields, cut_key = _read_cut_off(text)
    except ValueError:
        return None  # not an object cut short, but no JSON at all
    missing = [key for key in required if key not in fields]
    if missing:
        where = "inside" if cut_key == missing[0] else "before"
        raise ParseError(f"the answer was cut off {where} its field {missing[0]!r}{hint}: {content[:200]!r}")
    return fields


def _read_cut_off(text):
    """(complete fields, key whose value was cut off or None) of an object cut short.

    Raises ValueError where ``text`` is not the beginning of a JSON object: a
    syntax error before its end, or an object that does end.
    """
    position = text.find("{")
    if position < 0:
        raise ValueError("no object")
    fields, end = {}, len(text)
    position += 1
    while True:
        position = _skip_whitespace(text, position)
        if position == end:
            return fields, None
        if text[position] != '"':
            raise ValueError(f"expected a key at {position}")
        key, position, complete = _read_value(text, position)
        if not complete:
            return fields, None  # cut inside a key
        position = _skip_whitespace(text, position)
        if position == end:
            fields.pop(key, None)
            return fields, key
        if text[position] != ":":
            raise ValueError(f"expected ':' at {position}")
        position = _skip_whitespace(text, position + 1)
        if position == end:
            fields.pop(key, None)
            return fields, key
        value, position, complete = _read_value(text, position)
        if not complete:
            fields.pop(key, None)  # a repeated key cut off: the earlier value was replaced
            return fields, key
        fields[key] = value
        position = _skip_whitespace(text, position)
        if position == end:
            return fields, None
        if text[position] != ",":
            raise ValueError(f"expected ',' at {position}, the object is not cut off")
        position += 1


def _read_value(text, position):
    """(value, end, complete) of the JSON value at ``position``; ValueError if malformed."""
    end = len(text)
    try:
        value, stop = _DECODER.raw_decode(text, position)
    except json.JSONDecodeError as exc:
        rest = text[position:]
        cut = (
            exc.msg.startswith("Unterminated string")
            or (exc.msg.startswith("Invalid \\uXXXX") and re.fullmatch(r"u[0-9a-fA-F]{0,3}", text[exc.pos :]))
            or any(literal.startswith(rest) for literal in _LITERALS)
            or _NUMBER_PREFIX.fullmatch(rest) is not None
            or (rest[:1] in ("{", "[") and exc.pos >= len(text.rstrip(_JSON_WHITESPACE)))
        )
        if cut:
            return None, end, False
        raise ValueError(f"malformed value at {position}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and stop == end:
        return None, end, False  # the number may go on: "8" could be the start of "80"
    return value, stop, True


def _skip_whitespace(text, position):
    while position < len(text) and text[position] in _JSON_WHITESPACE:
        position += 1
    return position


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
    if value in EXAMPLE_PLACEHOLDERS:
        raise ParseError(_echo_reason(value))
    raise ParseError(f"the label {value[:100]!r} is not one of {list(label_names)}")


def find_label_in_text(content, label_names):
    """A label named by a plain-text answer: the whole answer, or the one label it mentions."""
    if repeats_prompt(content):
        raise ParseError(_echo_reason(content[:200]))
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


def repeats_prompt(content):
    """Whether ``content`` repeats the prompt: a placeholder of the text-mode example, or a sentence of the system prompt.

    Such an answer echoes the prompt; any label or number in it comes from the
    prompt, not from the model's judgement, so it is no answer. The sentences
    catch an echo cut off before the example, whose list of labels, cut after
    its first entry, would otherwise name one label.

    Examples
    --------
    >>> repeats_prompt('Answer ... in the form {"label": "<one of the labels>"}.')
    True
    >>> repeats_prompt('You are a careful data annotator. Choose exactly one label from this list: "cat",')
    True
    >>> repeats_prompt('{"label": "dog"}')
    False
    """
    return any(marker in content for marker in (*EXAMPLE_PLACEHOLDERS, *ECHO_MARKERS))


def _echo_reason(text):
    return f"the answer repeats the prompt instead of answering: {text!r}"


def parse_percent(value):
    """A probability from a percentage answer (0..100), or ParseError."""
    if str(value).strip() in EXAMPLE_PLACEHOLDERS:
        raise ParseError(_echo_reason(value))
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise ParseError(f"expected a percentage, got {value!r}") from None
    if not (math.isfinite(number) and 0 <= number <= 100):
        raise ParseError(f"expected a percentage in 0..100, got {value!r}")
    return number / 100.0


def label_value_start(content, label, key="label"):
    """Where the answered label's text starts in ``content``, or None.

    After ``"key": "`` in a JSON answer, else where a plain-text answer names
    ``label`` (in any case and spacing, as :func:`match_label` reads it). This
    is the ``value_start`` :func:`label_distribution` needs.

    Examples
    --------
    >>> label_value_start('{"label": "Dog"}', "dog")
    11
    >>> label_value_start("I think it is a DOG.", "dog")
    16
    """
    field = re.search(rf'"{re.escape(key)}"\s*:\s*"', content)
    if field:
        return field.end()
    named = re.search(rf"(?<!\w){_spelling(label)}(?!\w)", content, re.IGNORECASE)
    return named.start() if named else None


def label_distribution(response, content, value_start, label_names, answered):
    """Class probabilities from ``top_logprobs``, renormalised over the label set.

    Walks the tokens that spell the answered label (starting at character
    ``value_start`` of ``content``). The answered label gets the probability of
    its own tokens; an alternative token at some position gives its probability
    (times that of the tokens before it) to the labels it starts and the answer
    does not. Labels no listed token starts get 0. Servers differ: OpenAI's
    logprobs follow the grammar, llama.cpp's are the raw model's; both are
    renormalised over the labels.

    A token "starts" a label by the rule of :func:`match_label`: in any case,
    with any run of whitespace for a space and leading whitespace ignored, and
    however the label is split into tokens (an alternative may cover several
    of the answer's tokens, or end inside one). The whitespace between the JSON
    punctuation before the value and the value may differ too.

    Returns None when the response has no usable logprobs, or when the text at
    ``value_start`` does not spell the answered label.
    """
    tokens = ((response["choices"][0].get("logprobs") or {}).get("content")) or []
    spelled = "".join(t.get("token", "") for t in tokens)
    # some servers strip whitespace or a code fence from the content: find it in the tokens
    offset = spelled.find(content) if tokens else -1
    if offset < 0:
        return None
    content, value_start = spelled, value_start + offset
    spelling = re.compile(rf"\s*{_spelling(label_names[answered])}", re.IGNORECASE)
    found = spelling.match(content, value_start)
    if found is None:
        return None
    value_end = found.end()
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
            rest = _after_lead(text, lead)
            if text == token["token"] or not rest:
                continue
            written = consumed + rest
            if _fold_prefix(written) == _fold_prefix(consumed):
                continue  # only whitespace: tells no label from another
            takers = [
                index
                for index, name in enumerate(label_names)
                if _starts(name, written) and not _starts(name, actual)
            ]
            for index in takers:
                mass[index] += path_proba * math.exp(alternative["logprob"]) / len(takers)
        path_proba *= math.exp(token["logprob"])
    mass[answered] += path_proba
    total = mass.sum()
    if not (math.isfinite(total) and total > 0):
        return None
    return mass / total


def value_span(content, key=None, label=None):
    """(start, end) of the value of JSON field ``key`` in ``content`` (inside a string's quotes), or None.

    With ``label`` and no such field, the span of ``label`` where a plain-text
    answer names it (as :func:`label_value_start` finds it).

    Examples
    --------
    >>> value_span('{"label": "dog", "x": 1}', "label")
    (11, 14)
    >>> value_span("It is a Dog.", "label", label="dog")
    (8, 11)
    """
    field = re.search(rf'"{re.escape(key)}"\s*:\s*', content) if key else None
    if field is not None:
        try:
            _, end, complete = _read_value(content, field.end())
        except ValueError:
            return None
        start = field.end()
        if content.startswith('"', start):
            start, end = start + 1, end - complete  # the closing quote is not the value
        return start, end
    if label is None:
        return None
    named = re.search(rf"(?<!\w){_spelling(label)}(?!\w)", content, re.IGNORECASE)
    return named.span() if named else None


def value_logprobs(response, content, spans):
    """Log-probabilities of the tokens that write ``spans`` (character ranges of ``content``), or None.

    A token counts when it overlaps a span. None when the response has no
    logprobs or its tokens do not spell ``content``.
    """
    tokens = ((response["choices"][0].get("logprobs") or {}).get("content")) or []
    offset = "".join(t.get("token", "") for t in tokens).find(content) if tokens else -1
    if offset < 0:
        return None
    logprobs, position = [], 0
    for token in tokens:
        start, position = position, position + len(token.get("token", ""))
        if any(start < offset + end and position > offset + begin for begin, end in spans):
            logprobs.append(float(token["logprob"]))
    return logprobs or None


def _after_lead(text, lead):
    """What an alternative token writes after ``lead`` (the JSON before the value), or None.

    Whitespace in and around ``lead`` is insignificant JSON whitespace: it may
    differ in the alternative.
    """
    position = 0
    for char in lead:
        if char.isspace():
            continue
        position = _skip_whitespace(text, position)
        if not text.startswith(char, position):
            return None
        position += 1
    return text[position:]


def _starts(name, written):
    """Whether a label is consistent with the characters generated so far (as match_label folds)."""
    name, written = _fold(name), _fold_prefix(written)
    return name.startswith(written) or (
        written.startswith(name) and not written[len(name) :][:1].isalnum()
    )


def _spelling(label):
    """A regular expression for ``label`` with any run of whitespace for a space."""
    return r"\s+".join(re.escape(word) for word in label.split())


def _fold(text):
    return " ".join(str(text).lower().split())


def _fold_prefix(text):
    """``_fold`` for text that may go on: a trailing space (the end of a word) is kept."""
    return re.sub(r"\s+", " ", str(text).lower().lstrip())
