"""Request bodies -> model inputs: our `/predict` and MLflow's `/invocations` formats, and the
BadInput messages (field and reason) everything a caller can get wrong answers with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploy.bundle.inputs import (
    BadInput,
    Limits,
    Prompts,
    Sequences,
    invocations,
    predict,
    prompts,
    sampling_params,
    sequences,
)

LIMITS = Limits(input_size=2, max_steps=4, max_sequences=3, max_new_chars=50, max_prompt_chars=10)
DEFAULT_PARAMS = {"max_new_chars": 200, "temperature": 1.0, "top_k": 0, "seed": 0}
LM_LIMITS = Limits(input_size=0, max_steps=0, max_new_chars=500, max_prompt_chars=10)


def _shapes(parsed: Sequences) -> list[tuple[int, ...]]:
    return [x.shape for x in parsed.items]


def test_sequences_parse_steps_of_features_as_float32():
    parsed = sequences([[[1, 2], [3, 4], [5, 6]]], LIMITS)
    (x,) = parsed.items
    assert x.dtype == np.float32 and x.shape == (3, 2)
    assert x.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_sequences_reshape_a_flat_list_of_t_times_f_numbers():
    (x,) = sequences([[1, 2, 3, 4]], LIMITS).items
    assert x.shape == (2, 2) and x.tolist() == [[1, 2], [3, 4]]


def test_sequences_of_different_lengths_are_kept_ragged():
    parsed = sequences([[[0, 0]], [[1, 1], [2, 2], [3, 3]], [1, 2, 3, 4]], LIMITS)
    assert _shapes(parsed) == [(1, 2), (3, 2), (2, 2)]


@pytest.mark.parametrize("raw", [[], None, {"a": 1}, "seq", 3])
def test_sequences_refuse_what_is_not_a_non_empty_list(raw):
    with pytest.raises(BadInput, match=r"^sequences: expected a non-empty list of sequences$"):
        sequences(raw, LIMITS)


def test_sequences_refuse_more_than_the_limit_per_request():
    with pytest.raises(BadInput, match=r"^sequences: 4 sequences, at most 3 per request$"):
        sequences([[0, 0]] * 4, LIMITS)


@pytest.mark.parametrize(
    "seq",
    [[[1, 2], [3]], ["a", "b"], [[1, 2], "ab"], {"a": 1}, [[1, 2], [[3, 4]]]],
)
def test_sequences_refuse_ragged_or_non_numeric_steps(seq):
    with pytest.raises(BadInput, match=r"^sequences\[1\]: not a rectangular array of numbers$"):
        sequences([[0, 0], seq], LIMITS)


@pytest.mark.parametrize(
    "seq,shape",
    [
        ([1, 2, 3], "(3,)"),  # 3 numbers are not T*2
        ([[1, 2, 3]], "(1, 3)"),  # 3 features, the model takes 2
        ([[[1, 2]]], "(1, 1, 2)"),
        (7, "()"),
        ([], "(0,)"),
        ([[]], "(1, 0)"),
    ],
)
def test_sequences_refuse_the_wrong_shape_naming_it(seq, shape):
    with pytest.raises(BadInput) as e:
        sequences([seq], LIMITS)
    assert str(e.value) == f"sequences[0]: expected shape (T, 2) or T*2 numbers, got {shape}"


def test_sequences_refuse_an_empty_sequence_of_steps():
    # JSON's [] is shape (0,), refused above; an array caller can pass zero steps of F features.
    with pytest.raises(BadInput, match=r"^sequences\[0\]: empty sequence$"):
        sequences([np.zeros((0, 2))], LIMITS)


def test_sequences_refuse_more_steps_than_the_limit():
    sequences([[[0, 0]] * 4], LIMITS)  # at the limit: fine
    with pytest.raises(BadInput, match=r"^sequences\[0\]: 5 steps, at most 4$"):
        sequences([[[0, 0]] * 5], LIMITS)
    with pytest.raises(BadInput, match=r"^sequences\[0\]: 5 steps, at most 4$"):
        sequences([[0] * 10], LIMITS)  # flat: 10 numbers are 5 steps


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None, 1e39])
def test_sequences_refuse_nan_or_infinite_values(bad):
    # None is read as NaN; 1e39 overflows float32 to infinity.
    with pytest.raises(BadInput, match=r"^sequences\[2\]: contains NaN or infinite values$"):
        sequences([[0, 0], [1, 1], [[0, 0], [bad, 1.0]]], LIMITS)


def test_sequences_refuse_nan_padded_steps():
    # A built-in benchmark's model reads fixed-length sequences: padding is only for user data.
    with pytest.raises(BadInput, match="contains NaN"):
        sequences([[[1, 2], [math.nan, math.nan]]], LIMITS)


USER_DATA = Limits(input_size=2, max_steps=4, padded=True)  # a model of the user's sequences


def test_user_data_sequences_drop_trailing_nan_padding_as_the_pyfunc_does():
    parsed = sequences([[[1, 2], [3, 4], [math.nan, math.nan]], [[5, 6]]], USER_DATA)
    assert _shapes(parsed) == [(2, 2), (1, 2)]
    padded = [[[1, 2], [3, 4]], [[5, 6], [None, None]]]  # (N, T, F), as `mlflow models serve`
    assert _shapes(invocations({"inputs": padded}, False, USER_DATA)) == [(2, 2), (1, 2)]


def test_user_data_missing_values_are_taken_only_by_a_model_that_fills_them():
    gap = [[[1, 2], [math.nan, 4], [5, 6]]]
    with pytest.raises(BadInput, match=r"^sequences\[0\]: contains NaN \(missing\) values; "):
        sequences(gap, USER_DATA)
    fills = Limits(input_size=2, max_steps=4, padded=True, fills_missing=True)
    assert _shapes(sequences(gap, fills)) == [(3, 2)]
    with pytest.raises(BadInput, match=r"^sequences\[0\]: contains infinite values$"):
        sequences([[[1, math.inf]]], fills)
    with pytest.raises(BadInput, match=r"^sequences\[0\]: empty sequence \(every step is NaN"):
        sequences([[[math.nan, math.nan]]], fills)


def test_sequences_refuse_an_integer_beyond_float():
    with pytest.raises(BadInput, match=r"^sequences\[0\]: a number too large for float32$"):
        sequences([[10**400, 1]], LIMITS)


def test_sequences_refuse_nesting_beyond_the_interpreter_limit():
    deep: list = [0.0]
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(BadInput, match=r"^sequences\[0\]: "):
        sequences([deep], LIMITS)


def test_sequences_name_the_field_they_were_given():
    with pytest.raises(BadInput, match=r"^inputs\[0\]: expected shape \(T, 2\) or T\*2 numbers"):
        sequences([[]], LIMITS, field="inputs")
    with pytest.raises(BadInput, match=r"^instances: expected a non-empty list"):
        sequences([], LIMITS, field="instances")


def test_prompts_take_a_string_or_a_list_of_strings():
    one = prompts("The ", None, LM_LIMITS)
    assert one == Prompts(["The "], DEFAULT_PARAMS)
    many = prompts(["a", "b"], {"top_k": 3}, LM_LIMITS)
    assert many.texts == ["a", "b"] and many.params["top_k"] == 3


@pytest.mark.parametrize("raw", [[], None, 3, ["a", 1], [["a"]], {"prompt": "a"}])
def test_prompts_refuse_what_is_not_strings(raw):
    with pytest.raises(
        BadInput, match=r"^prompt: expected a string or a non-empty list of strings$"
    ):
        prompts(raw, None, LM_LIMITS)


def test_prompts_refuse_too_many_or_too_long():
    limits = Limits(input_size=0, max_steps=0, max_sequences=2, max_prompt_chars=5)
    prompts(["12345", ""], None, limits)  # at the limits: fine
    with pytest.raises(BadInput, match=r"^prompt: 3 prompts, at most 2$"):
        prompts(["a", "b", "c"], None, limits)
    with pytest.raises(BadInput, match=r"^prompt\[1\]: 6 characters, at most 5$"):
        prompts(["a", "123456"], None, limits)


def test_sampling_params_fill_defaults_and_convert_types():
    assert sampling_params(None, LM_LIMITS) == DEFAULT_PARAMS
    assert sampling_params({}, LM_LIMITS) == DEFAULT_PARAMS
    out = sampling_params(
        {"max_new_chars": 10.0, "temperature": 0, "top_k": 5, "seed": 3}, LM_LIMITS
    )
    assert out == {"max_new_chars": 10, "temperature": 0.0, "top_k": 5, "seed": 3}
    assert type(out["max_new_chars"]) is int and type(out["temperature"]) is float


@pytest.mark.parametrize(
    "params,message",
    [
        ([1], "params: expected an object"),
        ({"temp": 1}, "params.temp: unknown field (max_new_chars, temperature, top_k, seed)"),
        ({"seed": "1"}, "params.seed: expected a number"),
        ({"top_k": True}, "params.top_k: expected a number"),
        ({"top_k": None}, "params.top_k: expected a number"),
        ({"top_k": 2.5}, "params.top_k: expected an integer"),
        ({"temperature": math.nan}, "params.temperature: must be a finite number"),
        ({"temperature": math.inf}, "params.temperature: must be a finite number"),
        ({"top_k": math.inf}, "params.top_k: must be a finite number"),
        ({"seed": math.nan}, "params.seed: must be a finite number"),
        ({"temperature": 10**400}, "params.temperature: must be a finite number"),
        ({"seed": 2**64}, "params.seed: between 0 and 2**63 - 1"),
        ({"temperature": 10.5}, "params.temperature: between 0 (greedy) and 10"),
        ({"temperature": -0.1}, "params.temperature: between 0 (greedy) and 10"),
        ({"max_new_chars": 501}, "params.max_new_chars: between 0 and 500"),
        ({"max_new_chars": -1}, "params.max_new_chars: between 0 and 500"),
        ({"top_k": -1}, "params.top_k: 0 (all) or more"),
    ],
)
def test_sampling_params_refuse_bad_values_naming_the_field(params, message):
    with pytest.raises(BadInput) as e:
        sampling_params(params, LM_LIMITS)
    assert str(e.value) == message


def test_predict_parses_sequences_for_a_classifier():
    parsed = predict({"sequences": [[[1, 2]], [3, 4, 5, 6]]}, False, LIMITS)
    assert isinstance(parsed, Sequences) and _shapes(parsed) == [(1, 2), (2, 2)]


def test_predict_parses_prompt_and_sampling_fields_for_a_language_model():
    parsed = predict({"prompt": "To be", "temperature": 0.5, "seed": None}, True, LM_LIMITS)
    assert parsed == Prompts(["To be"], {**DEFAULT_PARAMS, "temperature": 0.5})


@pytest.mark.parametrize(
    "body,language_model,message",
    [
        ([1], False, "body: expected a JSON object"),
        (
            {"sequences": [[0, 0]], "extra": 1},
            False,
            "extra: unknown field (sequences, prompt, max_new_chars, temperature, top_k, seed)",
        ),
        ({}, False, "sequences: this model takes `sequences` (not `prompt`)"),
        ({"prompt": "a"}, False, "sequences: this model takes `sequences` (not `prompt`)"),
        (
            {"sequences": [[0, 0]], "prompt": "a"},
            False,
            "sequences: this model takes `sequences` (not `prompt`)",
        ),
        (
            {"sequences": [[0, 0]], "top_k": 3},
            False,
            "top_k: only language models take sampling parameters",
        ),
        (
            {"sequences": [[0, 0]]},
            True,
            "prompt: a language model takes `prompt` (not `sequences`)",
        ),
        (
            {"prompt": "a", "sequences": [[0, 0]]},
            True,
            "prompt: a language model takes `prompt` (not `sequences`)",
        ),
        ({"prompt": "a", "top_k": -2}, True, "params.top_k: 0 (all) or more"),
        (
            {"sequences": [[0, 0, 0]]},
            False,
            "sequences[0]: expected shape (T, 2) or T*2 numbers, got (3,)",
        ),
    ],
)
def test_predict_refuses_bad_bodies_naming_the_field(body, language_model, message):
    with pytest.raises(BadInput) as e:
        predict(body, language_model, LM_LIMITS if language_model else LIMITS)
    assert str(e.value) == message


def test_invocations_inputs_take_an_n_t_f_array():
    parsed = invocations({"inputs": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}, False, LIMITS)
    assert _shapes(parsed) == [(2, 2), (2, 2)]
    assert parsed.items[1].tolist() == [[5, 6], [7, 8]]


def test_invocations_instances_take_ragged_sequences():
    parsed = invocations({"instances": [[[1, 2]], [1, 2, 3, 4, 5, 6]]}, False, LIMITS)
    assert _shapes(parsed) == [(1, 2), (3, 2)]


def test_invocations_dataframe_split_with_one_column_of_flattened_sequences():
    body = {"dataframe_split": {"columns": ["sequence"], "data": [[[1, 2, 3, 4]], [[5, 6]]]}}
    parsed = invocations(body, False, LIMITS)
    assert _shapes(parsed) == [(2, 2), (1, 2)]
    assert parsed.items[0].tolist() == [[1, 2], [3, 4]]


def test_invocations_dataframe_split_with_one_column_per_value():
    body = {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4]]}}
    (x,) = invocations(body, False, LIMITS).items
    assert x.tolist() == [[1, 2], [3, 4]]


def test_invocations_dataframe_records_one_key_or_one_key_per_value():
    single = invocations({"dataframe_records": [{"sequence": [1, 2, 3, 4]}]}, False, LIMITS)
    assert single.items[0].tolist() == [[1, 2], [3, 4]]
    wide = invocations({"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}, False, LIMITS)
    assert [x.tolist() for x in wide.items] == [[[1, 2]], [[3, 4]]]


def test_invocations_name_the_format_in_sequence_errors():
    with pytest.raises(BadInput, match=r"^instances\[1\]: contains NaN or infinite values$"):
        invocations({"instances": [[0, 0], [math.nan, 0]]}, False, LIMITS)
    with pytest.raises(BadInput, match=r"^dataframe_split\[0\]: expected shape \(T, 2\)"):
        invocations({"dataframe_split": {"data": [[1, 2, 3]]}}, False, LIMITS)
    with pytest.raises(BadInput, match=r"^inputs: expected a non-empty list of sequences$"):
        invocations({"inputs": {"sequence": [[0, 0]]}}, False, LIMITS)


def test_invocations_refuse_nan_padded_inputs():
    # A built-in benchmark's model (its pyfunc too) takes no padding: every step is numbers.
    padded = [[[1, 2], [3, 4]], [[5, 6], [math.nan, math.nan]]]
    with pytest.raises(BadInput, match=r"^inputs\[1\]: contains NaN or infinite values$"):
        invocations({"inputs": padded}, False, LIMITS)


def test_invocations_prompts_from_each_format():
    params = {"params": {"max_new_chars": 5}}
    expected = Prompts(["a", "b"], {**DEFAULT_PARAMS, "max_new_chars": 5})
    bodies = [
        {"inputs": {"prompt": ["a", "b"]}},
        {"instances": ["a", "b"]},
        {"dataframe_records": [{"prompt": "a"}, {"prompt": "b"}]},
        {"dataframe_split": {"columns": ["prompt"], "data": [["a"], ["b"]]}},
        {"dataframe_split": {"columns": ["id", "prompt"], "data": [[1, "a"], [2, "b"]]}},
        {"dataframe_split": {"data": [["a"], ["b"]]}},  # no columns: the first
    ]
    for body in bodies:
        assert invocations({**body, **params}, True, LM_LIMITS) == expected, body


def test_invocations_prompt_errors_name_the_format():
    with pytest.raises(BadInput, match=r"^dataframe_records: expected a string or a non-empty"):
        invocations({"dataframe_records": [{"text": "a"}]}, True, LM_LIMITS)
    with pytest.raises(BadInput, match=r"^dataframe_split: expected a string or a non-empty"):
        invocations({"dataframe_split": {"columns": ["prompt"], "data": ["a"]}}, True, LM_LIMITS)
    with pytest.raises(BadInput, match=r"^inputs\[0\]: 11 characters, at most 10$"):
        invocations({"inputs": {"prompt": ["x" * 11]}}, True, LM_LIMITS)
    with pytest.raises(BadInput, match=r"^params\.top_k: 0 \(all\) or more$"):
        invocations({"instances": ["a"], "params": {"top_k": -1}}, True, LM_LIMITS)


@pytest.mark.parametrize(
    "body,message",
    [
        (
            [1],
            "body: expected an object with one of dataframe_split, dataframe_records, inputs, "
            "instances",
        ),
        (
            {"inputs": [[0, 0]], "columns": ["a"]},
            "columns: unknown field (dataframe_split, dataframe_records, inputs, instances, params)",
        ),
        (
            {},
            "body: expected exactly one of dataframe_split, dataframe_records, inputs, instances",
        ),
        (
            {"params": {}},
            "body: expected exactly one of dataframe_split, dataframe_records, inputs, instances",
        ),
        (
            {"inputs": [[0, 0]], "instances": [[0, 0]]},
            "body: expected exactly one of dataframe_split, dataframe_records, inputs, instances",
        ),
        ({"inputs": [[0, 0]], "params": {"a": 1}}, "params: this model takes no parameters"),
        (
            {"dataframe_records": [[0, 0]]},
            "dataframe_records: expected a list of records (objects)",
        ),
        (
            {"dataframe_records": {"a": 1}},
            "dataframe_records: expected a list of records (objects)",
        ),
        (
            {"dataframe_split": [[0, 0]]},
            "dataframe_split: expected an object with `data` (and `columns`)",
        ),
        (
            {"dataframe_split": {"columns": ["a"]}},
            "dataframe_split: expected an object with `data` (and `columns`)",
        ),
    ],
)
def test_invocations_refuse_bad_bodies_naming_the_field(body, message):
    with pytest.raises(BadInput) as e:
        invocations(body, False, LIMITS)
    assert str(e.value) == message


def test_invocations_take_empty_params_for_a_classifier():
    parsed = invocations({"inputs": [[0, 0]], "params": {}}, False, LIMITS)
    assert _shapes(parsed) == [(1, 2)]
