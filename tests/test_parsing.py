"""Reading answers as weak models write them (issue #11): cut off, echoed, differently cased or split.

The content strings are shaped on what Gemma 3 270M wrote through llama-server:
whitespace padded until ``max_tokens`` ran out, and the system prompt echoed
back in text mode.
"""

import json
import math

import numpy as np
import pytest
from fake_llm import FakeLLM, completion

from act_sklearn import LLMFailureWarning, MLLMAnnotator, MLLMCriticizer
from act_sklearn.llm.parsing import (
    ParseError,
    find_label_in_text,
    label_distribution,
    label_value_start,
    match_label,
    parse_json_answer,
    parse_percent,
    repeats_prompt,
)
from act_sklearn.llm.prompts import (
    ANNOTATOR_SYSTEM,
    ASKING_STRATEGIES,
    CRITIC_SYSTEM,
    CRITIC_STRATEGY_TEXT,
    DEFAULT_INSTRUCTIONS,
    ECHO_MARKERS,
    EXAMPLE_PLACEHOLDERS,
    WHITESPACE_TOKENS_PER_SLOT,
    annotation_schema,
    answer_format,
    answer_token_budget,
    compact_grammar,
    criticism_schema,
    format_labels,
)

SPEAKERS = ["Donald Trump", "Hillary Clinton"]


# -- answers cut off at max_tokens ---------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        # the answer: the label is complete, then whitespace until max_tokens
        ('{\n \t "label": "Hillary Clinton"\n \t', {"label": "Hillary Clinton"}),
        ('{"label": "Donald Trump"\n  \t  \t  \t  \t  \t  \t  ', {"label": "Donald Trump"}),
        # reasoning first (chain of thought), cut after the comma that follows the label
        (
            '{"reasoning": "The quote \\"it takes a village\\" is from her 1996 book {sic}.", '
            '"label": "Hillary Clinton",',
            {
                "reasoning": 'The quote "it takes a village" is from her 1996 book {sic}.',
                "label": "Hillary Clinton",
            },
        ),
        # a number is complete once something follows it
        (
            '{"reasoning": "plain", "error_probability": 80\n \t \t',
            {"reasoning": "plain", "error_probability": 80},
        ),
        # a fence opened and never closed
        ('```json\n{"label": "Donald Trump"\n\n\t\t', {"label": "Donald Trump"}),
    ],
)
def test_an_answer_cut_off_after_its_required_fields_is_read(content, expected):
    required = [key for key in ("label", "error_probability") if key in expected]
    assert parse_json_answer(content, "length", required=required) == expected


def test_only_complete_fields_are_returned_from_a_cut_off_answer():
    content = '{"label": "Hillary Clinton", "confidence": 7'
    assert parse_json_answer(content, "length", required=["label"]) == {"label": "Hillary Clinton"}


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{\n \t \n \t \n \t", "before its field 'label'"),
        ('{"reasoning": "The speaker talks about a vill', "before its field 'label'"),
        ('{"lab', "before its field 'label'"),
        ('{\n \t "label"\n\t', "inside its field 'label'"),
        ('{\n \t "label": \n\t', "inside its field 'label'"),
        ('{\n \t "label": "Hillary Cl', "inside its field 'label'"),
        ('{"label": "Hillary Clinton\\', "inside its field 'label'"),
        ('{"label": "Hillary Clinton", "label": "Donald Tr', "inside its field 'label'"),
    ],
)
def test_an_answer_cut_off_before_a_required_field_is_complete_raises(content, reason):
    with pytest.raises(ParseError, match="cut off") as error:
        parse_json_answer(content, "length", required=["label"])
    assert reason in str(error.value) and "raise max_tokens" in str(error.value)


def test_a_number_at_the_very_end_may_be_cut_short():
    with pytest.raises(ParseError, match="inside its field 'error_probability'"):
        parse_json_answer('{"error_probability": 8', "length", required=["error_probability"])


def test_cut_off_answers_are_read_only_when_the_caller_names_its_fields():
    with pytest.raises(ParseError, match="not valid JSON"):
        parse_json_answer('{\n \t "label": "Hillary Clinton"\n \t', "length")


@pytest.mark.parametrize(
    "content",
    [
        '{"label": "Hillary Clinton" "Donald Trump"',  # a syntax error, not a cut
        '{"label" "Hillary Clinton"',  # no colon
        "Hillary Clinton",
    ],
)
def test_text_that_is_no_cut_off_object_is_still_refused(content):
    with pytest.raises(ParseError, match="not valid JSON"):
        parse_json_answer(content, "length", required=["label"])


@pytest.mark.parametrize(
    "content",
    [
        '{"label": "Hillary Clinton"}',
        '{\n  "label": "Hillary Clinton"\n}\n\n\t\t',
        '```json\n{"label": "Hillary Clinton"}\n```',
        'Sure! {"label": "Hillary Clinton"} is my answer.',
    ],
)
def test_complete_answers_read_as_before(content):
    assert parse_json_answer(content, "stop", required=["label"]) == {"label": "Hillary Clinton"}
    assert parse_json_answer(content) == {"label": "Hillary Clinton"}


# -- the text-mode prompt's example is never an answer ----------------------------


def _annotator_prompt(labels, schema):
    return ANNOTATOR_SYSTEM.format(
        instructions="Who said this?",
        labels=format_labels(labels),
        answer_format=answer_format("text", schema),
    )


def _critic_prompt(strategy, label="Hillary Clinton"):
    return CRITIC_SYSTEM.format(
        instructions=DEFAULT_INSTRUCTIONS,
        label=json.dumps(label),
        labels=format_labels(SPEAKERS),
        strategy=CRITIC_STRATEGY_TEXT[strategy],
        answer_format=answer_format("text", criticism_schema(strategy)),
    )


@pytest.mark.parametrize(
    "schema",
    [
        annotation_schema(SPEAKERS),
        annotation_schema(SPEAKERS, reasoning=True, confidence=True),
        *(criticism_schema(strategy) for strategy in ASKING_STRATEGIES),
    ],
)
def test_the_text_mode_example_holds_placeholders_only(schema):
    instruction = answer_format("text", schema)
    example = json.loads(instruction[instruction.index("{") : instruction.rindex("}") + 1])
    assert list(example) == list(schema["properties"])
    for value in example.values():
        assert value.startswith("<") and value.endswith(">")
        assert not any(char.isdigit() for char in value)
        assert all(name not in value for name in SPEAKERS)


def test_an_echoed_annotator_prompt_is_not_an_answer():
    # what Gemma 3 270M answered in text mode: its system prompt, the item, a stray word
    prompt = _annotator_prompt(SPEAKERS, annotation_schema(SPEAKERS))
    echo = f"{prompt}\n\nIt takes a village. mendatang"
    assert repeats_prompt(echo)
    answer = parse_json_answer(echo, "length")
    with pytest.raises(ParseError, match="repeats the prompt"):
        match_label(answer["label"], SPEAKERS)
    with pytest.raises(ParseError, match="repeats the prompt"):
        find_label_in_text(echo, SPEAKERS)


def test_an_echo_cut_off_anywhere_is_not_an_answer():
    # an echo cut at max_tokens between the first and the second label of the list names exactly one
    # label; no cut of the prompt may be read as one
    prompt = _annotator_prompt(SPEAKERS, annotation_schema(SPEAKERS))
    first_label_ends = prompt.index(format_labels(SPEAKERS[:1])) + len(format_labels(SPEAKERS[:1]))
    for cut in range(1, len(prompt) + 1):
        echo = prompt[:cut]
        with pytest.raises(ParseError, match="repeats the prompt|names no label"):
            find_label_in_text(echo, SPEAKERS)
    unmarked = prompt[:first_label_ends]
    for marker in ECHO_MARKERS:
        unmarked = unmarked.replace(marker, "")
    assert find_label_in_text(unmarked, SPEAKERS) == 0  # the sentences are what give the echo away
    for marker in ECHO_MARKERS:  # each is a sentence the system prompts really hold
        assert marker in ANNOTATOR_SYSTEM or marker in CRITIC_SYSTEM


@pytest.mark.parametrize("strategy", ["naive", "cot", "devil"])
def test_an_echoed_critic_prompt_gives_no_probability(strategy):
    echo = _critic_prompt(strategy, label="42") + "\n\nIt takes a village."
    answer = parse_json_answer(echo, "length")
    with pytest.raises(ParseError, match="repeats the prompt"):
        parse_percent(answer["error_probability"])


def test_an_echoed_multiple_choice_prompt_gives_no_grade(tmp_path):
    echo = _critic_prompt("mc") + "\n\nIt takes a village."
    fake = FakeLLM(lambda body, n: echo)
    critic = MLLMCriticizer(fake.backend(tmp_path), strategy="mc", classes=SPEAKERS, output_mode="text",
                            on_error="skip").fit()
    (failure,) = critic.criticize(["a speech"], ["Hillary Clinton"]).failures
    assert "repeats the prompt" in failure.reason


def test_an_echoed_yes_no_prompt_gives_no_answer():
    echo = _critic_prompt("logprob") + "\n\nIt takes a village."
    answer = parse_json_answer(echo)
    with pytest.raises(ParseError, match="repeats the prompt"):
        match_label(answer["answer"], ["yes", "no"])
    with pytest.raises(ParseError, match="repeats the prompt"):
        find_label_in_text(echo, ["yes", "no"])


def test_an_answer_in_the_examples_form_is_read():
    assert not repeats_prompt('{"label": "Hillary Clinton"}')
    assert match_label("hillary clinton", SPEAKERS) == 1
    assert parse_percent("70") == pytest.approx(0.7)
    assert all(placeholder not in SPEAKERS for placeholder in EXAMPLE_PLACEHOLDERS)


def _echo(body, n):
    system, item = body["messages"][0]["content"], body["messages"][-1]["content"]
    return completion(f"{system}\n\n{item}", finish_reason="length")


def _echo_cut_after_the_first_label(body, n):
    system = body["messages"][0]["content"]
    return completion(system[: system.index(",", system.index("this list:"))], finish_reason="length")


@pytest.mark.parametrize("echo", [_echo, _echo_cut_after_the_first_label])
def test_an_annotator_facing_an_echoing_model_records_a_failure_not_the_example(tmp_path, echo):
    fake = FakeLLM(echo)
    annotator = MLLMAnnotator(
        fake.backend(tmp_path), classes=SPEAKERS, output_mode="text", on_error="skip"
    ).fit()
    with pytest.warns(LLMFailureWarning, match="repeats the prompt"):
        labels = annotator.predict(["It takes a village."])
    assert labels.tolist() == [None]


def test_a_criticizer_facing_an_echoing_model_records_a_failure(tmp_path):
    fake = FakeLLM(_echo)
    critic = MLLMCriticizer(
        fake.backend(tmp_path), strategy="naive", classes=SPEAKERS, output_mode="text", on_error="skip"
    ).fit()
    with pytest.warns(LLMFailureWarning, match="repeats the prompt"):
        error_proba = critic.predict_error_proba(["It takes a village."], ["Hillary Clinton"])
    assert np.isnan(error_proba).all()


# -- logprobs: alternatives matched to labels as match_label matches answers --------


def _response(content, tokens):
    """A response whose logprobs spell ``content`` with ``tokens``.

    Each token is (text, probability, {alternative: probability}).
    """
    assert "".join(text for text, _, _ in tokens) == content
    listed = [
        {
            "token": text,
            "logprob": math.log(proba),
            "top_logprobs": [{"token": text, "logprob": math.log(proba)}]
            + [{"token": alt, "logprob": math.log(p)} for alt, p in alternatives.items()],
        }
        for text, proba, alternatives in tokens
    ]
    return completion(content, logprobs=listed)


def _distribution(content, tokens, labels, answered):
    start = label_value_start(content, labels[answered])
    return label_distribution(_response(content, tokens), content, start, labels, answered)


def test_case_variant_alternative_tokens_count_for_their_labels():
    labels = ["computer", "hockey", "politics"]
    content = '{"label": "hockey"}'
    tokens = [
        ('{"', 1.0, {}),
        ("label", 1.0, {}),
        ('":', 1.0, {}),
        (' "', 1.0, {}),
        ("hockey", 0.5, {"Hockey": 0.1, "Computer": 0.2, " Politics": 0.1}),
        ('"}', 1.0, {}),
    ]
    proba = _distribution(content, tokens, labels, answered=1)
    # "Hockey" is the answer in another case: no mass moves; the others count
    np.testing.assert_allclose(proba, np.array([0.2, 0.5, 0.1]) / 0.8)


def test_yes_no_alternatives_count_whatever_their_case():
    content = '{"answer": "no"}'
    tokens = [
        ('{"', 1.0, {}),
        ("answer", 1.0, {}),
        ('":', 1.0, {}),
        (' "', 1.0, {}),
        ("no", 0.6, {"Yes": 0.3, "No": 0.1}),
        ('"}', 1.0, {}),
    ]
    start = label_value_start(content, "no", key="answer")
    proba = label_distribution(_response(content, tokens), content, start, ["yes", "no"], 1)
    np.testing.assert_allclose(proba, [1 / 3, 2 / 3])


def test_an_answer_in_another_case_is_not_counted_twice():
    content = '{"label": "hillary clinton"}'
    tokens = [
        ('{"', 1.0, {}),
        ("label", 1.0, {}),
        ('":', 1.0, {}),
        (' "', 1.0, {}),
        ("h", 0.5, {"H": 0.3, "D": 0.2}),  # "H" is the answered label again, capitalised
        ("illary", 1.0, {}),
        (" clinton", 1.0, {}),
        ('"}', 1.0, {}),
    ]
    proba = _distribution(content, tokens, SPEAKERS, answered=1)
    np.testing.assert_allclose(proba, [0.2 / 0.7, 0.5 / 0.7])


def test_multi_token_labels_split_differently_from_the_answer():
    labels = ["Hillary Clinton", "Hockey", "Donald Trump"]
    content = '{"label": "Hillary Clinton"}'
    tokens = [
        ('{"', 1.0, {}),
        ("label", 1.0, {}),
        ('":', 1.0, {}),
        # the opening quote and the value's first letters in one token; the
        # alternatives split the quote, the space and the label other ways
        (
            ' "Hill',
            0.4,
            {
                ' "Hillary': 0.1,  # the answered label, split after "Hillary": no mass moves
                '"Ho': 0.1,  # no space before the quote: still the value "Ho..."
                ' "Donald Trump"}': 0.2,  # one token for the whole of another label
                " \"don": 0.1,  # and one in lower case
            },
        ),
        ("ary", 1.0, {}),
        (" Clinton", 0.5, {" Clint": 0.2, " Trump": 0.3}),  # no label is "Hillary Trump"
        ('"}', 1.0, {}),
    ]
    proba = _distribution(content, tokens, labels, answered=0)
    answered = 0.4 * 0.5
    np.testing.assert_allclose(proba, np.array([answered, 0.1, 0.3]) / (answered + 0.4))


def test_no_distribution_when_the_text_does_not_spell_the_answered_label():
    content = '{"label": "Hillary Clinton"}'
    tokens = [(content, 1.0, {})]
    response = _response(content, tokens)
    start = label_value_start(content, "Donald Trump")
    assert label_distribution(response, content, start, SPEAKERS, 0) is None


def test_label_value_start_finds_the_label_as_match_label_reads_it():
    assert label_value_start('{"label":   "Hillary Clinton"}', "Hillary Clinton") == 13
    assert label_value_start("I believe it is HILLARY  clinton.", "Hillary Clinton") == 16
    assert label_value_start('{"answer": "Yes"}', "yes", key="answer") == 12
    assert label_value_start("No label here.", "Hillary Clinton") is None


# -- max_tokens from the schema ----------------------------------------------------


def _padded(schema, longest, whitespace):
    """The longest answer llama.cpp's grammar allows, padded with ``whitespace`` at every place it may."""
    pad = whitespace
    parts = [pad, "{"]
    for position, key in enumerate(schema["properties"]):
        if position:
            parts += [pad, ",", pad]
        else:
            parts += [pad]
        parts += [json.dumps(key), pad, ":", pad, json.dumps(longest[key], ensure_ascii=False)]
    return "".join(parts)


@pytest.mark.parametrize(
    "schema",
    [
        annotation_schema(["alt.atheism", "comp.sys.ibm.pc.hardware", "rec.sport.hockey"]),
        annotation_schema(["Ünïcödé ☃", "plain"], confidence=True),
        criticism_schema("naive"),
        criticism_schema("logprob"),
    ],
)
def test_the_budget_covers_the_longest_answer_padded_at_every_place(schema):
    budget = answer_token_budget(schema)
    longest = {
        key: max(field["enum"], key=lambda value: len(json.dumps(value, ensure_ascii=False).encode()))
        for key, field in schema["properties"].items()
    }
    # one token per byte, the worst any tokenizer does; 22 characters of whitespace
    # at each place, the most llama.cpp's JSON grammar allows
    padded = _padded(schema, longest, "\n" + " \t" * 10)
    assert len(padded.encode()) < budget
    # so a model padding everywhere is cut off after its last field, which is read
    tail = "\n" + " \t" * 10
    cut = (padded + tail)[: budget - 1]
    assert parse_json_answer(cut, "length", required=schema["required"]) == longest


def test_the_budget_grows_with_the_labels_and_the_reasoning_bound():
    short = answer_token_budget(annotation_schema(["cat", "dog"]))
    long = answer_token_budget(annotation_schema(["cat", "Hillary Rodham Clinton"]))
    assert long - short == len("Hillary Rodham Clinton") - len("cat")
    bounded = answer_token_budget(annotation_schema(["cat", "dog"], reasoning=True, max_reasoning_chars=300))
    unbounded = answer_token_budget(annotation_schema(["cat", "dog"], reasoning=True))
    assert short < bounded < unbounded
    cot = criticism_schema("cot")
    assert answer_token_budget(cot, reasoning_chars=3000) > answer_token_budget(cot)
    tight = answer_token_budget(annotation_schema(["cat", "dog"]), whitespace_tokens=0)
    assert short - tight == 4 * WHITESPACE_TOKENS_PER_SLOT


# -- a compact grammar for llama.cpp ----------------------------------------------------


def test_the_compact_grammar_spells_answers_as_json_dumps_does(llama_server_url):
    import openai

    schema = annotation_schema(SPEAKERS + ['The "other" one'], reasoning=True, max_reasoning_chars=20)
    with openai.OpenAI(base_url=llama_server_url, api_key="unused", max_retries=0, timeout=60) as client:
        for seed in range(3):
            response = client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": "Who said: it takes a village?"}],
                max_tokens=200,  # the tiny model's vocabulary is bytes: a token a character
                seed=seed,
                extra_body={"grammar": compact_grammar(schema)},
            )
            content = response.choices[0].message.content
            answer = json.loads(content)
            assert content == json.dumps(answer, ensure_ascii=False)
            assert list(answer) == ["reasoning", "label"] and len(answer["reasoning"]) <= 20
            assert answer["label"] in schema["properties"]["label"]["enum"]
