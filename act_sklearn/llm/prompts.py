"""Prompt templates and response formats for annotation and criticism.

Every answer is a small JSON object. The same schema is offered three ways, from
the strictest to the most lenient, so that any OpenAI-compatible server works:
OpenAI ``json_schema`` structured output, ``json_object`` with a schema
(llama-cpp-python and others), and plain text read by a strict parser.

The text-mode prompt shows the answer's form with placeholders
(``{"label": "<one of the labels>"}``), never a real value: a model that
repeats its prompt then repeats a placeholder, which the parser refuses
(:data:`EXAMPLE_PLACEHOLDERS`), instead of a label it would take as the answer; an
echo cut off before the example still repeats a sentence of the prompt
(:data:`ECHO_MARKERS`), which the parser refuses as well.
"""

import json
import math

# Verbalised probabilities are percentages in steps of 5: an enum every server can
# constrain, unlike numeric ranges, which portable structured output leaves out.
PERCENT_STEPS = list(range(0, 101, 5))
OUTPUT_MODES = ("json_schema", "json_object", "text")  # output_mode="auto" tries them in this order
# Opt-in: llama.cpp's GBNF grammar for the compact spelling only (compact_grammar). Other servers
# refuse the field (OpenAI) or ignore it (vLLM), so "auto" never sends it.
GRAMMAR_MODE = "grammar"
# The critic is asked a question in these; the others repeat the annotator's own requests.
ASKING_STRATEGIES = ("naive", "cot", "devil", "logprob", "mc")
ANNOTATOR_STRATEGIES = ("perplexity", "consistency")
CRITIC_STRATEGIES = ASKING_STRATEGIES + ANNOTATOR_STRATEGIES
# The multiple-choice grades of strategy "mc": letter -> (what the option says, the error probability
# it maps to: the middle of its range). A letter is one token in every vocabulary.
MC_GRADES = {
    "A": ("almost certainly right (under 10% chance that it is wrong)", 0.05),
    "B": ("probably right (10 to 40%)", 0.25),
    "C": ("as likely right as wrong (40 to 60%)", 0.5),
    "D": ("probably wrong (60 to 90%)", 0.75),
    "E": ("almost certainly wrong (over 90%)", 0.95),
}

# Sentences of the system prompts that only an echo repeats (ECHO_MARKERS): an echo cut off (at
# max_tokens) before the example's placeholder still holds one of them, and may hold a label: the
# list of labels, cut after its first entry, names exactly one.
ANNOTATOR_ROLE = "You are a careful data annotator."
ANNOTATOR_LABELS = "Choose exactly one label from this list:"
CRITIC_ROLE = "You are a critical reviewer of data annotations."
CRITIC_LABELS = "The possible labels are:"
ECHO_MARKERS = (ANNOTATOR_ROLE, ANNOTATOR_LABELS, CRITIC_ROLE, CRITIC_LABELS)

ANNOTATOR_SYSTEM = (
    ANNOTATOR_ROLE + " {instructions}\n"
    + ANNOTATOR_LABELS + " {labels}.\n"
    "{answer_format}"
)
CRITIC_SYSTEM = (
    CRITIC_ROLE + " {instructions}\n"
    "An annotator chose the label {label} for the item the user sends. "
    + CRITIC_LABELS + " {labels}.\n"
    "{strategy}\n"
    "{answer_format}"
)
CRITIC_STRATEGY_TEXT = {
    "naive": "Estimate the probability, in percent, that the annotator's label is wrong.",
    "cot": (
        "Reason step by step about whether the label fits the item, then estimate the "
        "probability, in percent, that the annotator's label is wrong."
    ),
    "devil": (
        "Play devil's advocate: argue as strongly as you can that the label is wrong. Then weigh "
        "that argument honestly and estimate the probability, in percent, that the label is wrong."
    ),
    "logprob": "Is the annotator's label wrong? Answer yes or no.",
    "mc": "How likely is it that the annotator's label is wrong? Choose one option: "
    + "; ".join(f"{letter}: {text}" for letter, (text, _) in MC_GRADES.items())
    + ". Answer with the option's letter.",
}
DEFAULT_INSTRUCTIONS = "Classify the item the user sends."

# What the text-mode example shows instead of values. No digits and no label, so
# that an echoed prompt yields neither a label nor a number.
LABEL_PLACEHOLDER = "<one of the labels>"
YES_NO_PLACEHOLDER = "<yes or no>"
PERCENT_PLACEHOLDER = "<percent>"
OPTION_PLACEHOLDER = "<the option's letter>"
EXAMPLE_PLACEHOLDERS = frozenset({LABEL_PLACEHOLDER, YES_NO_PLACEHOLDER, PERCENT_PLACEHOLDER, OPTION_PLACEHOLDER})

# max_tokens budget (answer_token_budget). llama.cpp's JSON grammar lets a
# model write up to 22 whitespace characters at each place JSON allows
# whitespace (its SPACE_RULE is `| " " | "\n"{1,2} [ \t]{0,20}`), one token each
# at worst.
WHITESPACE_TOKENS_PER_SLOT = 22
# Free text (reasoning) is estimated, not bounded: English prose averages about
# four characters a token; an answer cut off is asked again with more tokens.
FREE_TEXT_CHARS_PER_TOKEN = 3
# The length budgeted for a free-text field without maxLength (about 500 tokens).
DEFAULT_REASONING_CHARS = 1500


def string_field(max_chars=None):
    field = {"type": "string"}
    if max_chars is not None:
        field["maxLength"] = int(max_chars)
    return field


def object_schema(properties):
    """A strict object schema: every field required, nothing else allowed."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def annotation_schema(label_names, *, reasoning=False, confidence=False, max_reasoning_chars=None):
    properties = {}
    if reasoning:  # first, so that the label is conditioned on it
        properties["reasoning"] = string_field(max_reasoning_chars)
    properties["label"] = {"type": "string", "enum": list(label_names)}
    if confidence:
        properties["confidence"] = {"type": "integer", "enum": PERCENT_STEPS}
    return object_schema(properties)


def criticism_schema(strategy, *, max_reasoning_chars=None):
    if strategy not in ASKING_STRATEGIES:
        raise ValueError(f"strategy {strategy!r} asks no question of its own: it repeats the annotator's requests")
    if strategy == "logprob":
        return object_schema({"answer": {"type": "string", "enum": ["yes", "no"]}})
    if strategy == "mc":
        return object_schema({"option": {"type": "string", "enum": list(MC_GRADES)}})
    properties = {}
    if strategy == "cot":
        properties["reasoning"] = string_field(max_reasoning_chars)
    elif strategy == "devil":
        properties["argument"] = string_field(max_reasoning_chars)
    properties["error_probability"] = {"type": "integer", "enum": PERCENT_STEPS}
    return object_schema(properties)


def bounded_schema(schema, max_chars=DEFAULT_REASONING_CHARS):
    """``schema`` with ``maxLength=max_chars`` on each free-text field that has none (None if none lacks one).

    For an answer asked again after a model looped in its reasoning until
    ``max_tokens`` ran out: a server that enforces ``maxLength`` in its grammar
    (llama.cpp, vLLM) then closes the field, and the answer ends.
    """
    properties = {}
    for key, field in schema["properties"].items():
        if field.get("type") == "string" and "enum" not in field and "maxLength" not in field:
            field = {**field, "maxLength": int(max_chars)}
        properties[key] = field
    if properties == schema["properties"]:
        return None
    return {**schema, "properties": properties}


def format_fields(mode, name, schema):
    """The request fields that constrain the answer in an output mode: ``response_format``, ``grammar`` or none."""
    if mode == GRAMMAR_MODE:
        return {"grammar": compact_grammar(schema)}
    fmt = response_format(mode, name, schema)
    return {} if fmt is None else {"response_format": fmt}


def response_format(mode, name, schema):
    """The ``response_format`` request field for an output mode (None for text and grammar)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


def answer_format(mode, schema):
    """The instruction that tells the model how to answer.

    In text mode it shows the answer's form with placeholders for the values
    (see the module docstring); the constrained modes need no example.

    Examples
    --------
    >>> answer_format("text", annotation_schema(["cat", "dog"])).partition("in the form ")[2]
    '{"label": "<one of the labels>"}.'
    """
    fields = ", ".join(f'"{key}"' for key in schema["properties"])
    if mode == "text":
        form = {key: _placeholder(key, field) for key, field in schema["properties"].items()}
        return (
            f"Answer with a single JSON object with the fields {fields} and nothing else, "
            f"in the form {json.dumps(form)}."
        )
    return f"Answer in JSON with the fields {fields}."


def _placeholder(key, field):
    if field.get("enum") == ["yes", "no"]:
        return YES_NO_PLACEHOLDER
    if field.get("enum") == list(MC_GRADES):
        return OPTION_PLACEHOLDER
    if "enum" in field and field.get("type") == "string":
        return LABEL_PLACEHOLDER
    if field.get("type") in ("integer", "number"):
        # quoted, so that an echoed prompt still parses and is refused, instead of
        # falling through to a search for numbers in the echo
        return PERCENT_PLACEHOLDER
    return f"<your {key}>"


def answer_token_budget(schema, *, reasoning_chars=None, whitespace_tokens=WHITESPACE_TOKENS_PER_SLOT):
    """``max_tokens`` enough for the longest answer ``schema`` allows.

    Parameters
    ----------
    schema : dict
        An answer schema (:func:`annotation_schema`, :func:`criticism_schema`).
    reasoning_chars : int or None, default=None
        Characters to budget for a free-text field without ``maxLength``; None
        means :data:`DEFAULT_REASONING_CHARS`. A ``maxLength`` in the schema wins.
    whitespace_tokens : int, default=WHITESPACE_TOKENS_PER_SLOT
        Whitespace tokens allowed at each place before the last field's value.

    Returns
    -------
    max_tokens : int

    Notes
    -----
    The budget is the longest compact answer (the longest enum value of each
    field) counted as one token per UTF-8 byte, which no tokenizer exceeds; free
    text at :data:`FREE_TEXT_CHARS_PER_TOKEN` characters a token; whitespace at
    the :math:`4n` places a grammar lets a model pad before the last of
    :math:`n` fields is complete (before and after ``{``, after each key and
    colon, after each earlier value and comma); and one token to end. Padding
    after the last value needs no budget: :func:`~act_sklearn.llm.parsing.parse_json_answer`
    reads an answer cut off there.

    Examples
    --------
    >>> answer_token_budget(annotation_schema(["cat", "dog", "bird"]))
    106
    >>> answer_token_budget(annotation_schema(["cat", "dog"]), whitespace_tokens=0)
    17
    """
    properties = schema["properties"]
    longest = {}
    free_text_tokens = 0
    for key, field in properties.items():
        if "enum" in field:
            longest[key] = max(field["enum"], key=lambda value: len(_compact(value).encode("utf-8")))
        elif field.get("type") == "string":
            longest[key] = ""
            chars = field.get("maxLength", reasoning_chars or DEFAULT_REASONING_CHARS)
            free_text_tokens += math.ceil(chars / FREE_TEXT_CHARS_PER_TOKEN)
        else:
            raise ValueError(f"no token budget for the field {key!r}: {field}")
    structure_tokens = len(_compact(longest).encode("utf-8"))
    return structure_tokens + free_text_tokens + 4 * len(properties) * whitespace_tokens + 1


def mode_token_budget(mode, schema):
    """:func:`answer_token_budget` for an output mode: no whitespace to budget under the compact grammar."""
    return answer_token_budget(schema, whitespace_tokens=0 if mode == GRAMMAR_MODE else WHITESPACE_TOKENS_PER_SLOT)


def compact_grammar(schema):
    r"""A GBNF grammar for the one compact spelling of ``schema``'s answers (llama.cpp).

    llama.cpp's ``grammar`` request field (sent instead of ``response_format``)
    leaves the model no whitespace to pad: the answer reads exactly as
    ``json.dumps`` writes it, ``{"label": "cat"}``. Other servers do not know
    the field: OpenAI answers HTTP 400 ("Unrecognized request argument
    supplied: grammar") and vLLM ignores it, so send it to llama.cpp only.

    Examples
    --------
    >>> print(compact_grammar(annotation_schema(["cat", "dog"])))
    root ::= "{" "\"label\": " ("\"cat\"" | "\"dog\"") "}"
    """
    parts, rules = [], {}
    for position, (key, field) in enumerate(schema["properties"].items()):
        parts.append(_gbnf_literal(f"{', ' if position else ''}{_compact(key)}: "))
        if "enum" in field:
            parts.append("(" + " | ".join(_gbnf_literal(_compact(value)) for value in field["enum"]) + ")")
        elif field.get("type") == "string":
            # a JSON string character: anything but a quote, a backslash or a control
            # character, or an escape
            rules["char"] = r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
            repeat = f"{{0,{int(field['maxLength'])}}}" if "maxLength" in field else "*"
            parts.append(r'"\"" char' + repeat + r' "\""')
        else:
            raise ValueError(f"no grammar for the field {key!r}: {field}")
    lines = [f'root ::= "{{" {" ".join(parts)} "}}"']
    lines += [f"{name} ::= {rule}" for name, rule in rules.items()]
    return "\n".join(lines)


def _compact(value):
    return json.dumps(value, ensure_ascii=False)


def _gbnf_literal(text):
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def format_labels(label_names):
    return ", ".join(json.dumps(name) for name in label_names)
