"""Argo's expression languages, evaluated locally (aistack_flows.local._expr).

Each table row is one case a reader can check against Argo's behaviour (Go's formatting,
expr-lang's operators, sprig's argument order, govaluate's words, the DAG's `depends`). The
manifests in examples/ and templates/ are evaluated with a realistic scope, so every expression
the library writes is known to work here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from aistack_flows._checkpoint import checkpoint_environment
from aistack_flows._gang import gang_name
from aistack_flows._retry import FREE_RETRY, compose_retry_strategy
from aistack_flows.local._expr import (
    MAX_EXPRESSION_CHARS,
    Depends,
    ExpressionError,
    TaskResult,
    condition,
    evaluate,
    parse_depends,
    placeholders,
    substitute,
)

ROOT = Path(__file__).parents[2]
MANIFESTS = sorted([*(ROOT / "examples").glob("*.yaml"), *(ROOT / "templates").glob("*.yaml")])
WHERE = "template train, env AISTACK_CHECKPOINT_DIR"
UID = "0f3c9a1e-5b7d-4e2a-9c61-2d8b7f4a1e03"


def make_scope(**overrides: Any) -> dict[str, Any]:
    """What Argo offers rank 1 of a retried gang step (see aistack_flows/_gang.py)."""
    scope: dict[str, Any] = {
        "inputs": {
            "parameters": {"memory-gib": "16", "aistack-gang-rank": "1", "queue": "research"}
        },
        "workflow": {
            "name": "ddp-x7k2p",
            "uid": UID,
            "parameters": {"epochs": "3"},
            "labels": {"aistack.io/queue": "research"},
        },
        "node": {"name": "ddp-x7k2p.train(1:1)"},
        "pod": {"name": "ddp-x7k2p-train-2871"},
        "retries": 2,
        "item": {"shard": 3, "path": "s3://b/x"},
        "tasks": {"build": {"outputs": {"result": "ok", "parameters": {"image": "img:1"}}}},
        "lastRetry": {
            "status": "Failed",
            "message": "aistack: reclaimed for team-a",
            "exitCode": "137",
            "duration": "12",
        },
    }
    scope.update(overrides)
    return scope


def ev(expression: str, **overrides: Any) -> Any:
    return evaluate(expression, make_scope(**overrides), where=WHERE)


# -- evaluate ---------------------------------------------------------------------------------

EXPRESSIONS: list[tuple[str, Any]] = [
    # literals
    ("42", 42),
    ("1.5", 1.5),
    ("0x1F", 31),
    ("1_000", 1000),
    ('"a\\tb"', "a\tb"),
    ("'it\\'s'", "it's"),
    ("'\\u00e9\\x41\\101'", "éAA"),
    ("`raw\\n`", "raw\\n"),
    ("true", True),
    ("nil", None),
    ("[1, 'a', [2],]", [1, "a", [2]]),
    # names, members and indexes
    ("retries", 2),
    ("inputs.parameters['memory-gib']", "16"),
    ('inputs.parameters["aistack-gang-rank"]', "1"),
    ("item.shard", 3),
    ("workflow.labels['aistack.io/queue']", "research"),
    ("[10, 20, 30][-1]", 30),
    ("'abc'[1]", "b"),
    # arithmetic, by expr-lang's rules: `/` gives a float, `%` keeps the dividend's sign
    ("7 / 2", 3.5),
    ("6 / 3", 2.0),
    ("7 % 3", 1),
    ("-7 % 3", -1),
    ("2 + 3 * 4", 14),
    ("(2 + 3) * 4", 20),
    ("1 + 0.5", 1.5),
    ("-retries", -2),
    ("'a' + 'b'", "ab"),
    ("9223372036854775807 + 1", -9223372036854775808),  # int64 wraps, as in Go
    # comparison and logic
    ("1 == 1.0", True),
    ("'1' == 1", False),
    ("nil == nil", True),
    ("[1, 2] == [1, 2.0]", True),
    ("'a' < 'b'", True),
    ("2 >= 2.5", False),
    ("!true || true && false", False),
    ("not false and true", True),
    ("2 in [1, 2]", True),
    ("'shard' in item", True),
    ("3 not in [1, 2]", True),
    ("'abc' contains 'b'", True),
    ("'abc' startsWith 'ab'", True),
    ("'abc' endsWith 'bc'", True),
    ("'v1.2' matches '^v[0-9]+'", True),
    ("retries > 1 ? 'late' : 'early'", "late"),
    ("true ? false ? 1 : 2 : 3", 2),
    # nil: `??` binds tighter than `+`, as in expr-lang; `?.` and `??` allow a missing key
    ("nil ?? 1 + 1", 2),
    ("inputs.parameters.missing ?? 'fallback'", "fallback"),
    ("inputs.parameters['memory-gib'] ?? '8'", "16"),
    ("workflow?.nothing.deeper", None),
    # expr-lang's and Argo's functions
    ("int('16')", 16),
    ("int(2.9)", 2),
    ("int(-2.9)", -2),
    ("float('1.5') * 2", 3.0),
    ("asInt(retries)", 2),
    ("asFloat('2')", 2.0),
    ("string(1.5)", "1.5"),
    ("string(1024.0)", "1024"),
    ("len('abc')", 3),
    ("len(item)", 2),
    ("lower('AbC')", "abc"),
    ("upper('a')", "A"),
    ("trim('  a ')", "a"),
    ("trim('xxaxx', 'x')", "a"),
    ("trimPrefix('v1.2', 'v')", "1.2"),
    ("trimSuffix('a.txt', '.txt')", "a"),
    ("split('a,b,c', ',')", ["a", "b", "c"]),
    ("split('a,b,c', ',', 2)", ["a", "b,c"]),
    ("join(['a', 'b'], '-')", "a-b"),
    ("replace('a-b-c', '-', '_')", "a_b_c"),
    ("toJson(item)", '{"path":"s3://b/x","shard":3}'),
    ("toJSON([1])", "[\n  1\n]"),
    ("fromJSON('{\"a\": [1, 2]}').a[1]", 2.0),  # Go reads JSON numbers as floats
    ("jsonpath('{\"a\": {\"b\": [5, 6]}}', '$.a.b[1]')", 6.0),
    ("jsonpath('{\"a-b\": 1}', \"$['a-b']\")", 1.0),
    # sprig: the string it works on comes last
    ("sprig.trunc(3, 'abcdef')", "abc"),
    ("sprig.trunc(-3, 'abcdef')", "def"),
    ("sprig.trunc(10, 'abc')", "abc"),
    (
        "sprig.sha256sum('hello world')",
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
    ),
    # Go's documentation of Regexp.ReplaceAllString: `$1W` names a group "1W", so it is empty
    ("sprig.regexReplaceAll('a(x*)b', '-ab-axxb-', '${1}W')", "-W-xxW-"),
    ("sprig.regexReplaceAll('a(x*)b', '-ab-axxb-', '$1W')", "---"),
    ("sprig.regexReplaceAll('a(?P<x>x*)b', 'axxb', '[$x|$$|$2|$]')", "[xx|$||$]"),
    ("sprig.replace('-', '_', 'a-b')", "a_b"),
    ("sprig.lower('A')", "a"),
    ("sprig.upper('a')", "A"),
    ("sprig.trim(' a ')", "a"),
    ("sprig.trimSuffix('-0', 'gang-0')", "gang"),
    ("sprig.trimPrefix('v', 'v2')", "2"),
    ("sprig.toString(5)", "5"),
    ("sprig.int('0x1F')", 31),
    ("sprig.int('3.00')", 3),
    ("sprig.int('017')", 15),
    ("sprig.int('abc')", 0),
    ("sprig.atoi('42')", 42),
    ("sprig.atoi('4.2')", 0),
    ("sprig.add(1, '2', 3.9)", 6),
    ("sprig.sub('10', 4)", 6),
    ("sprig.default('d', '')", "d"),
    ("sprig.default('d', 0)", "d"),
    ("sprig.default('d', 'v')", "v"),
    ("sprig.quote('a\"b', 1)", '"a\\"b" "1"'),
    ("sprig.join('/', ['a', 1, nil])", "a/1"),
    ("sprig.splitList('.', 'a.b')", ["a", "b"]),
    ("sprig.split('.', 'a.b')._1", "b"),
]


@pytest.mark.parametrize(("expression", "expected"), EXPRESSIONS)
def test_evaluate(expression: str, expected: Any) -> None:
    result = ev(expression)
    assert result == expected
    assert type(result) is type(expected)


EVALUATION_ERRORS: list[tuple[str, str]] = [
    ('"a" * 2', "cannot compute string 'a' * int 2"),
    ("'a' + 1", "cannot compute string 'a' + int 1"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "modulo by zero"),
    ("1.5 % 1", "cannot compute float 1.5 % int 1"),
    ("'a' < 1", "cannot compare string 'a' < int 1"),
    ("!1", "'!' needs a bool, not int 1"),
    ("1 && true", "'&&' needs a bool, not int 1"),
    ("retries ? 1 : 2", "'?' needs a bool, not int 2 from retries"),
    ("-'a'", "unary '-' needs a number"),
    ("1 in 'abc'", "'in' needs an array or a map on its right"),
    ("1 contains 'a'", "'contains' needs strings on both sides"),
    ("'a' matches '('", "the regular expression '(' is invalid"),
    ("nobody", "unknown name 'nobody' (known: inputs, item, lastRetry, node, pod, retries,"),
    ("inputs.parameters.nope", "inputs.parameters has no 'nope' (known: aistack-gang-rank,"),
    ("retries.x", "retries is int 2, not a map, so it has no 'x'"),
    ("[1][5]", "index 5 is out of range for [...] (1 items)"),
    ("item[0]", "cannot index item (map"),
    ("int('1.5')", "int() cannot read '1.5' as a whole number"),
    ("float('x')", "float() cannot read 'x' as a number"),
    ("int(nil)", "int() cannot convert nil"),
    ("len(5)", "len() takes a string, array or map, not int 5"),
    ("sprig.trunc('16', 'abc')", "sprig.trunc() takes an int, not string '16'"),
    ("sprig.sha256sum(5)", "sprig.sha256sum() takes a string, not int 5"),
    ("sprig.nope('a')", "unknown function 'sprig.nope' at column 7"),
    ("nope(1)", "unknown function 'nope' at column 5"),
    ("int(1, 2)", "int() takes 1 argument, not 2"),
    ("sprig.trunc(1)", "sprig.trunc() takes 2 arguments, not 1"),
    ("int", "unknown name 'int'"),
    ("retries(1)", "unknown function 'retries'"),
    ("item.path(1)", "item.path is not a function"),
    ("(1 + 2", "expected ')' at column 7, found 'end of expression'"),
    ("1 2", "unexpected '2' at column 3"),
    ("1 +", "unexpected 'end of expression' at column 4"),
    ("retries.0", "expected a name after '.' at column 9"),
    ("'open", "the string at column 1 is never closed"),
    ("'\\q'", "an unknown escape '\\q' at column 2"),
    ("1 # 2", "unexpected '#' at column 3"),
    ("99999999999999999999", "the integer 99999999999999999999 is out of range"),
    ("fromJSON('{')", "fromJSON: the text is not JSON"),
    ("jsonpath('{}', '$..a')", "the local runner reads only $.key, $['key'] and $[N] steps"),
    ("jsonpath('{\"a\": 1}', '$.b')", "no key 'b' (known: a)"),
    ("  ", "an empty expression"),
    ("(" * 101 + "1" + ")" * 101, "deeper than 100 levels"),
    ("1" + " + 1" * 100, "deeper than 100 levels"),
    ("'" + "a" * MAX_EXPRESSION_CHARS + "'", "characters long, over the limit of 10000"),
]


@pytest.mark.parametrize(("expression", "problem"), EVALUATION_ERRORS)
def test_evaluate_refuses(expression: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        ev(expression)
    assert problem in caught.value.problem
    assert caught.value.where == WHERE
    assert caught.value.text == expression


def test_an_error_names_where_the_text_what_is_wrong_and_what_to_do() -> None:
    with pytest.raises(ExpressionError) as caught:
        ev("int(float(inputs.parameters['memory-gb']) * 1024)")
    assert str(caught.value) == (
        "template train, env AISTACK_CHECKPOINT_DIR: inputs.parameters has no 'memory-gb' "
        "(known: aistack-gang-rank, memory-gib, queue), in "
        "\"int(float(inputs.parameters['memory-gb']) * 1024)\"; did you mean 'memory-gib'?"
    )
    assert isinstance(caught.value, ValueError)
    copied = pickle.loads(pickle.dumps(caught.value))
    assert str(copied) == str(caught.value)


def test_a_long_text_is_shortened_in_the_message() -> None:
    with pytest.raises(ExpressionError) as caught:
        ev("'" + "a" * 300 + "' * 2")
    assert len(str(caught.value)) < 500
    assert len(caught.value.text) == 306


def test_reading_through_nil_points_to_nil_safe_access() -> None:
    with pytest.raises(ExpressionError, match="use \\?\\. or \\?\\? where the value may be nil"):
        ev("item.nothing.deeper", item={"nothing": None})


# -- The expressions our library writes -------------------------------------------------------


def test_the_checkpoint_directory_names_the_node_with_safe_characters() -> None:
    [(_, value)] = checkpoint_environment("/checkpoints", gang=False).items()
    scope = make_scope(node={"name": "train-6q2.train(0)"})
    assert substitute(value, scope, where=WHERE) == "/checkpoints/train-6q2.train_0_"


def test_every_member_of_a_gang_computes_the_same_name() -> None:
    expected = hashlib.sha256(f"{UID}/ddp-x7k2p.train".encode()).hexdigest()[:16] + "-2"
    names = {
        substitute(gang_name(retried=True), make_scope(node={"name": node}), where=WHERE)
        for node in ("ddp-x7k2p.train(0:0)", "ddp-x7k2p.train(1:1)", "ddp-x7k2p.train(15:15)")
    }
    assert names == {expected}


def test_the_gang_checkpoint_directory_is_shared_by_the_members() -> None:
    [(_, value)] = checkpoint_environment("/ckpt", gang=True).items()
    directories = {
        substitute(value, make_scope(node={"name": f"ddp.main.train({r}:{r})"}), where=WHERE)
        for r in range(3)
    }
    assert directories == {"/ckpt/ddp.main.train"}


def test_a_slices_memory_in_gib_becomes_mib() -> None:
    text = "{{=int(float(inputs.parameters['memory-gib']) * 1024)}}"
    scope = make_scope(inputs={"parameters": {"memory-gib": "0.5"}})
    assert substitute(text, scope, where=WHERE) == "512"


@pytest.mark.parametrize(
    ("status", "message", "retried"),
    [
        ("Failed", "aistack: reclaimed for team-a", True),
        ("Failed", "aistack: preempted by job-7", True),
        ("Error", "aistack: reclaimed for team-a", False),
        ("Failed", "OOMKilled", False),
    ],
)
def test_the_free_retry_expression_retries_only_an_eviction(
    status: str, message: str, retried: bool
) -> None:
    last = {"status": status, "message": message, "exitCode": "1", "duration": "3"}
    assert ev(FREE_RETRY, lastRetry=last) is retried


@pytest.mark.parametrize(
    ("author", "status", "exit_code", "retried"),
    [
        ({"retryPolicy": "OnError"}, "Error", "1", True),
        ({"retryPolicy": "OnError"}, "Failed", "1", False),
        ({"limit": "2"}, "Failed", "1", True),
        ({"expression": "asInt(lastRetry.exitCode) > 1"}, "Failed", "137", True),
        ({"expression": "asInt(lastRetry.exitCode) > 1"}, "Failed", "1", False),
    ],
)
def test_a_composed_retry_expression_keeps_the_authors_rule(
    author: dict[str, str], status: str, exit_code: str, retried: bool
) -> None:
    strategy = compose_retry_strategy(author, reclaim_retries=3)
    assert isinstance(strategy, dict)
    last = {"status": status, "message": "boom", "exitCode": exit_code, "duration": "3"}
    assert ev(strategy["expression"], lastRetry=last) is retried


REALISTIC_PARAMETERS = {
    "memory-gib": "16",
    "compute-percent": "25",
    "aistack-gang-rank": "1",
    "queue": "research",
    "image": "pytorch/pytorch:2.5.1",
    "command": "python train.py",
    "name": "server",
    "replicas": "2",
}


def strings_in(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a manifest, with its path (`spec.templates[1].container.env[0].value`)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings_in(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def manifest_scope(manifest: dict[str, Any]) -> dict[str, Any]:
    """A scope that offers every input parameter the manifest's templates declare."""
    spec = manifest["spec"].get("workflowSpec", manifest["spec"])  # a CronWorkflow nests it
    parameters = {
        parameter["name"]: REALISTIC_PARAMETERS.get(parameter["name"], parameter.get("default"))
        for template in spec["templates"]
        for parameter in (template.get("inputs") or {}).get("parameters", [])
    }
    return make_scope(inputs={"parameters": parameters})


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            path,
            id=f"{path.parent.name}/{path.name}",
        )
        for path in MANIFESTS
    ],
)
def test_every_expression_in_our_manifests_evaluates(path: Path) -> None:
    text = path.read_text()
    expressions = retry_expressions = 0
    for manifest in yaml.safe_load_all(text):
        scope = manifest_scope(manifest)
        for place, value in strings_in(manifest):
            where = f"{path.name}: {place}"
            if "{{=" in value:
                rendered = substitute(value, scope, where=where)
                assert "{{" not in rendered, where
                expressions += value.count("{{=")
            if place.endswith("retryStrategy.expression"):
                evicted = make_scope()["lastRetry"]
                crashed = {**evicted, "message": "Error (exit code 1)"}
                assert evaluate(value, make_scope(lastRetry=evicted), where=where) is True
                assert evaluate(value, make_scope(lastRetry=crashed), where=where) is False
                retry_expressions += 1
    # Every expression in the file was found: none hides in a place the walk missed.
    assert expressions == text.count("{{=")
    assert retry_expressions == text.count("expression:")


def test_the_manifests_hold_expressions_to_check() -> None:
    assert sum(p.read_text().count("{{=") for p in MANIFESTS) >= 20
    assert sum(p.read_text().count("expression:") for p in MANIFESTS) >= 8


# -- substitute and placeholders --------------------------------------------------------------

SUBSTITUTIONS: list[tuple[str, str]] = [
    ("{{inputs.parameters.aistack-gang-rank}}", "1"),
    ("{{ inputs.parameters.memory-gib }}GiB", "16GiB"),
    ("{{retries}}", "2"),
    ("{{workflow.labels.aistack.io/queue}}", "research"),
    ("{{item}}", '{"path":"s3://b/x","shard":3}'),
    ("{{item.shard}}", "3"),
    ("{{tasks.build.outputs.parameters.image}}", "img:1"),
    ("no placeholders", "no placeholders"),
    ("{ {not one} }", "{ {not one} }"),
    ("{{=int(float(inputs.parameters['memory-gib']) * 1024)}}", "16384"),
    # `{{=...}}` writes its value as Go's %v does
    ("{{=float(inputs.parameters['memory-gib']) * 1024}}", "16384"),
    ("{{=retries * 1000000.0}}", "2e+06"),
    ("{{=retries / 8}}", "0.25"),
    ("{{=[1, 'a', 2.0]}}", "[1 a 2]"),
    ("{{=item}}", "map[path:s3://b/x shard:3]"),
    ("{{=retries > 1}}", "true"),
    ("{{= retries + 1 }}-{{retries}}", "3-2"),
]


@pytest.mark.parametrize(("text", "expected"), SUBSTITUTIONS)
def test_substitute(text: str, expected: str) -> None:
    assert substitute(text, make_scope(), where=WHERE) == expected


ITEMS: list[tuple[Any, str]] = [
    ("text", "text"),
    (3, "3"),
    (1.5, "1.5"),
    (2.0, "2"),
    (1e21, "1e+21"),
    (1e-7, "1e-7"),
    (True, "true"),
    (None, "null"),
    ([1, "a"], '[1,"a"]'),
    ({"b": 1, "a": [True, None]}, '{"a":[true,null],"b":1}'),
    ({"html": "<a&b>"}, '{"html":"\\u003ca\\u0026b\\u003e"}'),
]


@pytest.mark.parametrize(("item", "rendered"), ITEMS)
def test_an_item_is_written_as_argo_writes_it(item: Any, rendered: str) -> None:
    assert substitute("{{item}}", {"item": item}, where=WHERE) == rendered


SUBSTITUTION_ERRORS: list[tuple[str, str]] = [
    ("{{inputs.parameters.nope}}", "inputs.parameters has no 'nope' (known: aistack-gang-rank,"),
    ("{{nope}}", "unknown variable 'nope': the scope has no 'nope'"),
    ("{{ }}", "an empty placeholder"),
    ("{{retries.x}}", "retries is int 2, which has no 'x'"),
    ("a {{retries", "'{{' at column 3 is never closed"),
    ("{{=nil}}", "the expression evaluated to nil"),
    ("{{=1 +}}", "unexpected 'end of expression'"),
]


@pytest.mark.parametrize(("text", "problem"), SUBSTITUTION_ERRORS)
def test_substitute_refuses(text: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        substitute(text, make_scope(), where=WHERE)
    assert problem in caught.value.problem
    assert caught.value.where == WHERE


def test_a_missing_variable_suggests_the_nearest_name() -> None:
    with pytest.raises(ExpressionError) as caught:
        substitute("x={{inputs.parameters.aistack-gang-rnak}}", make_scope(), where=WHERE)
    assert caught.value.text == "{{inputs.parameters.aistack-gang-rnak}}"
    assert caught.value.hint == "did you mean 'aistack-gang-rank'?"


def test_placeholders_lists_variables_and_expressions_in_order() -> None:
    text = "{{ inputs.parameters.x }}-{{=int(y) }}/{{item}}"
    assert placeholders(text, where=WHERE) == ["inputs.parameters.x", "=int(y)", "item"]
    assert placeholders("plain", where=WHERE) == []
    with pytest.raises(ExpressionError, match="never closed"):
        placeholders("{{item", where=WHERE)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def reads_back(original: Any, parsed: Any) -> bool:
    """Whether JSON read back is the original, reading a float's digits as Go does (a float)."""
    if isinstance(original, float):
        return isinstance(parsed, int | float) and float(parsed) == original
    if isinstance(original, list):
        return (
            isinstance(parsed, list)
            and len(parsed) == len(original)
            and all(map(reads_back, original, parsed))
        )
    if isinstance(original, dict):
        return (
            isinstance(parsed, dict)
            and parsed.keys() == original.keys()
            and all(reads_back(original[k], parsed[k]) for k in original)
        )
    return type(parsed) is type(original) and bool(parsed == original)


@given(JSON_VALUES)
def test_an_item_reads_back_as_the_same_json(value: Any) -> None:
    rendered = substitute("{{item}}", {"item": [value]}, where=WHERE)
    assert reads_back([value], json.loads(rendered))


@given(st.floats(allow_nan=False))
def test_a_float_written_by_an_expression_reads_back_as_the_same_float(value: float) -> None:
    rendered = substitute("{{=x}}", {"x": value}, where=WHERE)
    assert float(rendered) == value


# -- properties of evaluate -------------------------------------------------------------------


def go_division(a: int, b: int) -> int:
    """Go's integer division: truncated toward zero."""
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


INT64S = st.integers(-(2**31), 2**31)


@given(INT64S, INT64S.filter(bool), st.sampled_from(["+", "-", "*", "%", "/", "<", "==", ">="]))
def test_int_arithmetic_agrees_with_go(a: int, b: int, op: str) -> None:
    expected = {
        "+": a + b,
        "-": a - b,
        "*": a * b,
        "%": a - b * go_division(a, b),
        "/": a / b,
        "<": a < b,
        "==": a == b,
        ">=": a >= b,
    }[op]
    assert evaluate(f"a {op} b", {"a": a, "b": b}, where=WHERE) == expected


OPERATORS = ["+", "-", "*", "/", "%", "<", ">=", "==", "!=", "&&", "||", "??", "in", "contains"]


@given(JSON_VALUES, JSON_VALUES, st.sampled_from(OPERATORS))
def test_any_operands_give_a_value_or_an_expression_error(left: Any, right: Any, op: str) -> None:
    with contextlib.suppress(ExpressionError):
        evaluate(f"left {op} right", {"left": left, "right": right}, where=WHERE)


@given(st.text(alphabet="ab1.'\"`()[]+-*/%!<>=&|?:, \\", max_size=30))
def test_any_text_gives_a_value_or_an_expression_error(text: str) -> None:
    with contextlib.suppress(ExpressionError):
        evaluate(text, {"a": {"b": 1}, "b": [1, "a"]}, where=WHERE)


@given(JSON_VALUES, JSON_VALUES)
def test_equality_is_symmetric(left: Any, right: Any) -> None:
    scope = {"l": left, "r": right}
    assert evaluate("l == r", scope, where=WHERE) == evaluate("r == l", scope, where=WHERE)


# -- condition (`when`) -----------------------------------------------------------------------

CONDITIONS: list[tuple[str, bool]] = [
    ("heads == heads", True),
    ('"tails" != heads', True),
    ("'tails' == heads", False),
    ("5 > 3", True),
    ("10 > 9", True),  # numbers, not the strings "10" and "9"
    ("10 < 9.5", False),
    ("1 == '1'", False),
    ("b > a", True),
    ("true", True),
    ("false || true", True),
    ("!(1 == 1)", False),
    ("done == done && 2 >= 2", True),
    ("hello =~ '^h'", True),
    ("hello !~ 'x$'", True),
    ("1 + 1 == 2", True),
    ("a + b == ab", True),
    ("3 % 2 == 1 && 6 / 4 == 1.5 && 2 * 3 - 1 == 5", True),
    ("-1 < 0", True),
    ("Succeeded == Succeeded", True),
    ("v1.2 == v1.2", True),
]


@pytest.mark.parametrize(("text", "expected"), CONDITIONS)
def test_condition(text: str, expected: bool) -> None:
    assert condition(text, where=WHERE) is expected


CONDITION_ERRORS: list[tuple[str, str]] = [
    ("heads", "the condition gives string 'heads', not true or false"),
    ("1 + 1", "the condition gives float 2.0"),
    ("my-task == my-task", "cannot compute string 'my' - string 'task'"),
    ("1.2.3 == 1.2.3", "'1.2.3' at column 1 is not a number"),
    ("a == {{b}}", "an unresolved placeholder"),
    ("(a == a", "expected ')' at column 8"),
    ("a == a b", "unexpected 'b' at column 8"),
    ("a in b", "'in' at column 3 is an operator here"),
    ("1 > a", "cannot compare float 1.0 > string 'a'"),
    ("a && true", "'&&' needs true or false on both sides"),
    ("x =~ '('", "the regular expression '(' is invalid"),
    ("x =~ 1", "'=~' needs strings on both sides"),
    ("path == /tmp/x", "unexpected '/' at column 9"),
    ('"open', "the string at column 1 is never closed"),
    ("1 / 0 == 1", "division by zero"),
    ("!a", "'!' needs true or false"),
    ("-a", "'-' needs a number"),
    ("a == ?", "unexpected '?' at column 6"),
    ("(" * 101 + "true" + ")" * 101, "the condition nests deeper than 100 levels"),
]


@pytest.mark.parametrize(("text", "problem"), CONDITION_ERRORS)
def test_condition_refuses(text: str, problem: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        condition(text, where=WHERE)
    assert problem in caught.value.problem
    assert caught.value.text == text


def test_a_when_after_substitution() -> None:
    when = "{{tasks.build.outputs.result}} == ok && {{retries}} < 3"
    assert condition(substitute(when, make_scope(), where=WHERE), where=WHERE) is True


# -- depends ----------------------------------------------------------------------------------

SUCCEEDED = TaskResult("Succeeded")
FAILED = TaskResult("Failed")

DEPENDS: list[tuple[str, dict[str, TaskResult], bool]] = [
    ("a", {"a": SUCCEEDED}, True),
    ("a", {"a": TaskResult("Skipped")}, True),
    ("a", {"a": FAILED}, False),
    ("a", {"a": TaskResult("Error")}, False),
    ("a", {"a": TaskResult("Omitted")}, False),
    ("a", {"a": TaskResult("Failed", continues_on=frozenset({"Failed"}))}, True),
    ("a", {"a": TaskResult("Running", daemoned=True)}, True),
    ("a.Daemoned", {"a": TaskResult("Pending", daemoned=True)}, False),
    ("a.Daemoned", {"a": SUCCEEDED}, False),
    ("a.Succeeded", {"a": TaskResult("Skipped")}, False),
    ("a.Failed", {"a": FAILED}, True),
    ("a.Errored", {"a": TaskResult("Error")}, True),
    ("a.Skipped", {"a": TaskResult("Skipped")}, True),
    ("a.Omitted", {"a": TaskResult("Omitted")}, True),
    ("a.AnySucceeded", {"a": TaskResult("Failed", children=("Failed", "Succeeded"))}, True),
    ("a.AnySucceeded", {"a": TaskResult("Failed", children=("Failed", "Error"))}, False),
    ("a.AllFailed", {"a": TaskResult("Failed", children=("Failed", "Failed"))}, True),
    ("a.AllFailed", {"a": TaskResult("Failed", children=("Failed", "Error"))}, False),
    ("a.AllFailed", {"a": FAILED}, False),  # not a fan-out: it has no members
    ("a && b", {"a": SUCCEEDED, "b": FAILED}, False),
    ("a || b.Failed", {"a": FAILED, "b": FAILED}, True),
    ("!a.Failed", {"a": SUCCEEDED}, True),
    (
        "task-1.Succeeded && (task_2.Failed || !task-3)",
        {
            "task-1": SUCCEEDED,
            "task_2": SUCCEEDED,
            "task-3": FAILED,
        },
        True,
    ),
    ("a || b && c", {"a": SUCCEEDED, "b": FAILED, "c": SUCCEEDED}, True),  # && binds tighter
    ("", {}, True),
    # Argo's examples/dag-enhanced-depends.yaml: P passes, F fails
    ("P && (F.Succeeded || F.Failed)", {"P": SUCCEEDED, "F": FAILED}, True),
    ("P || F", {"P": SUCCEEDED, "F": FAILED}, True),
    ("P && F", {"P": SUCCEEDED, "F": FAILED}, False),
]


@pytest.mark.parametrize(("text", "results", "expected"), DEPENDS)
def test_depends(text: str, results: dict[str, TaskResult], expected: bool) -> None:
    depends = parse_depends(text, where=WHERE)
    assert depends.tasks == frozenset(results)
    assert depends.evaluate(results) is expected


DEPENDS_ERRORS: list[tuple[str, str, str]] = [
    ("a.Completed", "'a.Completed' is not a task result Argo knows", "(a.Succeeded || a.Failed)"),
    ("a.succeeded", "'a.succeeded' is not a task result", "did you mean 'Succeeded'?"),
    ("a &&", "unexpected 'end of depends' at column 5", "a task name is missing here"),
    ("(a || b", "expected ')' at column 8", "balance the parentheses"),
    ("a b", "unexpected 'b' at column 3", "join task names with && or ||"),
    ("a & b", "unexpected '&' at column 3", "write task names joined by &&, || and !"),
    ("!" * 101 + "a", "depends nests deeper than 100 levels", "simplify it"),
]


@pytest.mark.parametrize(("text", "problem", "hint"), DEPENDS_ERRORS)
def test_parse_depends_refuses(text: str, problem: str, hint: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_depends(text, where=WHERE)
    assert problem in caught.value.problem
    assert hint in caught.value.hint


def test_dependencies_mean_each_task_bare_and_all_of_them() -> None:
    depends = Depends.from_dependencies(["build", "test-2"])
    assert depends == parse_depends("build && test-2", where=WHERE)
    assert repr(depends) == "Depends('build && test-2')"
    assert depends.tasks == {"build", "test-2"}
    assert depends.evaluate({"build": SUCCEEDED, "test-2": TaskResult("Skipped")})
    assert not depends.evaluate({"build": SUCCEEDED, "test-2": FAILED})
    assert Depends.from_dependencies([]).evaluate({})


def test_dependencies_refuse_what_is_not_a_task_name() -> None:
    with pytest.raises(ExpressionError, match="dag main: not a task name"):
        Depends.from_dependencies(["a || b"], where="dag main")


def test_depends_needs_a_result_for_every_task_it_names() -> None:
    depends = parse_depends("a && b", where="dag main, task c")
    with pytest.raises(ExpressionError) as caught:
        depends.evaluate({"a": SUCCEEDED, "z": SUCCEEDED})
    assert caught.value.where == "dag main, task c"
    assert caught.value.problem == "no result for task(s) b (known: a, z)"


def test_a_task_result_refuses_a_phase_argo_does_not_have() -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        TaskResult("Done")
    with pytest.raises(ValueError, match="may hold only 'Failed' and 'Error'"):
        TaskResult("Failed", continues_on=frozenset({"Succeeded"}))


TASKS = ("a", "b-2", "c_3")
RESULT_NAMES = (None, "Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned")
FAN_OUT_RESULTS = ("AnySucceeded", "AllFailed")
PHASES = ("Succeeded", "Failed", "Error", "Skipped", "Omitted")

Tree = tuple[Any, ...]

TREES: st.SearchStrategy[Tree] = st.recursive(
    st.tuples(
        st.just("ref"), st.sampled_from(TASKS), st.sampled_from(RESULT_NAMES + FAN_OUT_RESULTS)
    ),
    lambda inner: (
        st.tuples(st.just("not"), inner) | st.tuples(st.sampled_from(["and", "or"]), inner, inner)
    ),
    max_leaves=10,
)
TASK_RESULTS = st.builds(
    TaskResult,
    phase=st.sampled_from(PHASES),
    children=st.lists(st.sampled_from(PHASES), max_size=3).map(tuple),
    daemoned=st.booleans(),
)


def written(tree: Tree, *, minimal: bool) -> str:
    """The tree as `depends` text: fully parenthesised, or with only the parentheses needed."""
    kind = tree[0]
    if kind == "ref":
        return tree[1] if tree[2] is None else f"{tree[1]}.{tree[2]}"
    if kind == "not":
        operand = written(tree[1], minimal=minimal)
        return f"!{operand}" if minimal and tree[1][0] in ("ref", "not") else f"!({operand})"
    left, right = (written(side, minimal=minimal) for side in tree[1:])
    if minimal and kind == "and":
        left, right = (
            f"({w})" if s[0] == "or" else w for w, s in zip((left, right), tree[1:], strict=True)
        )
    elif not minimal:
        left, right = f"({left})", f"({right})"
    return f"{left} {'&&' if kind == 'and' else '||'} {right}"


def truth(tree: Tree, results: dict[str, TaskResult]) -> bool:
    """What Argo's documentation says the tree means, written directly."""
    kind = tree[0]
    if kind == "not":
        return not truth(tree[1], results)
    if kind in ("and", "or"):
        sides = [truth(side, results) for side in tree[1:]]
        return all(sides) if kind == "and" else any(sides)
    result = results[tree[1]]
    daemoned = result.daemoned and result.phase != "Pending"
    return {
        None: result.phase in ("Succeeded", "Skipped") or daemoned,
        "Succeeded": result.phase == "Succeeded",
        "Failed": result.phase == "Failed",
        "Errored": result.phase == "Error",
        "Skipped": result.phase == "Skipped",
        "Omitted": result.phase == "Omitted",
        "Daemoned": daemoned,
        "AnySucceeded": "Succeeded" in result.children,
        "AllFailed": len(result.children) > 0 and set(result.children) == {"Failed"},
    }[tree[2]]


@given(TREES, st.fixed_dictionaries(dict.fromkeys(TASKS, TASK_RESULTS)), st.booleans())
def test_depends_means_what_argo_documents(
    tree: Tree, results: dict[str, TaskResult], minimal: bool
) -> None:
    depends = parse_depends(written(tree, minimal=minimal), where=WHERE)
    assert depends.evaluate(results) is truth(tree, results)


def test_nan_and_infinities_render_as_go_does() -> None:
    assert substitute("{{=x}} {{=-x}} {{=y}}", {"x": math.inf, "y": math.nan}, where=WHERE) == (
        "+Inf -Inf NaN"
    )
