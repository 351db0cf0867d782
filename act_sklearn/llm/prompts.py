"""Prompt templates and response formats for annotation and criticism.

Every answer is a small JSON object. The same schema is offered three ways, from
the strictest to the most lenient, so that any OpenAI-compatible server works:
OpenAI ``json_schema`` structured output, ``json_object`` with a schema
(llama-cpp-python and others), and plain text read by a strict parser.
"""

import json

# Verbalised probabilities are percentages in steps of 5: an enum every server can
# constrain, unlike numeric ranges, which portable structured output leaves out.
PERCENT_STEPS = list(range(0, 101, 5))
OUTPUT_MODES = ("json_schema", "json_object", "text")
CRITIC_STRATEGIES = ("naive", "cot", "devil", "logprob")

ANNOTATOR_SYSTEM = (
    "You are a careful data annotator. {instructions}\n"
    "Choose exactly one label from this list: {labels}.\n"
    "{answer_format}"
)
CRITIC_SYSTEM = (
    "You are a critical reviewer of data annotations. {instructions}\n"
    "An annotator chose the label {label} for the item the user sends. "
    "The possible labels are: {labels}.\n"
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
}
DEFAULT_INSTRUCTIONS = "Classify the item the user sends."


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
    if strategy == "logprob":
        return object_schema({"answer": {"type": "string", "enum": ["yes", "no"]}})
    properties = {}
    if strategy == "cot":
        properties["reasoning"] = string_field(max_reasoning_chars)
    elif strategy == "devil":
        properties["argument"] = string_field(max_reasoning_chars)
    properties["error_probability"] = {"type": "integer", "enum": PERCENT_STEPS}
    return object_schema(properties)


def response_format(mode, name, schema):
    """The ``response_format`` request field for an output mode (None for text)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


def answer_format(mode, schema):
    """The instruction that tells the model how to answer."""
    fields = ", ".join(f'"{key}"' for key in schema["properties"])
    if mode == "text":
        example = {key: _example_value(value) for key, value in schema["properties"].items()}
        return (
            f"Answer with a single JSON object with the fields {fields} and nothing else, "
            f"for example {json.dumps(example)}."
        )
    return f"Answer in JSON with the fields {fields}."


def _example_value(field):
    if "enum" in field:
        return field["enum"][0]
    return "..." if field.get("type") == "string" else 0


def format_labels(label_names):
    return ", ".join(json.dumps(name) for name in label_names)
