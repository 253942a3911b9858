"""Reply formats: schema checks as the user types (syntax, metaschema, llama.cpp's converter), formats stored
and restored, JSON replies validated and pretty-printed without changing what is stored."""

from __future__ import annotations

import json

import pytest

from app.core.errors import ConfigError
from app.core.structured import (
    JSON_ANY,
    JSON_SCHEMA,
    TEXT,
    ReplyFormat,
    find_schema_problem,
    format_json_reply,
    reply_problem,
    schema_problem,
)

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "write a JSON schema"),
        ('{"type": "object",}', "line 1, column 19: Expecting property name enclosed in double quotes"),
        ('{\n  "type": "object"\n  "properties": {}\n}', "line 3, column 3: Expecting ',' delimiter"),
        ("[1, 2]", "a JSON schema is an object"),
        ('{"type": "objekt"}', "at type: 'objekt' is not a JSON type (use string, number, integer"),
        ('{"type": "object", "required": "name"}', "at required: 'name' is not of type 'array'"),
        ('{"minLength": -1}', "at minLength: -1 is less than the minimum of 0"),
        ('{"not": {"type": "string"}}', "llama.cpp cannot turn this schema into a grammar: it does not support"),
        (
            '{"$ref": "#/$defs/missing"}',
            'llama.cpp cannot turn this schema into a grammar: "$ref": "#/$defs/missing" points',
        ),
        (
            '{"$ref": "https://example.com/schema.json"}',
            'llama.cpp cannot turn this schema into a grammar: a "$ref" points outside the schema',
        ),
    ],
)
def test_schema_problems_say_what_and_where(text: str, expected: str):
    problem = schema_problem(text)
    assert problem is not None and problem.startswith(expected), problem


def test_usable_schemas_have_no_problem():
    for schema in (PERSON, {}, {"type": "array", "items": {"enum": ["a", "b"]}}, {"type": ["string", "null"]}):
        assert schema_problem(json.dumps(schema, indent=2)) is None


def test_problem_line_points_at_the_mistake():
    text = '{\n  "type": "object",\n  "properties": {\n    "age": {"type": "int"}\n  }\n}'
    problem = find_schema_problem(text)
    assert problem is not None and problem.line == 4
    assert problem.message.startswith("at properties → age → type: 'int' is not a JSON type")
    syntax = find_schema_problem('{\n  "a": 1,\n  "b" 2\n}')
    assert syntax is not None and syntax.line == 3


def test_reply_format_round_trip_and_grammar():
    for fmt in (ReplyFormat(), ReplyFormat(JSON_ANY), ReplyFormat(JSON_SCHEMA, PERSON)):
        assert ReplyFormat.from_dict(json.loads(json.dumps(fmt.to_dict()))) == fmt
    assert ReplyFormat(TEXT).grammar() is None
    assert "root" in (ReplyFormat(JSON_ANY).grammar() or "")
    assert '"\\"name\\""' in (ReplyFormat(JSON_SCHEMA, PERSON).grammar() or "")
    assert ReplyFormat.from_dict(None) == ReplyFormat()
    assert ReplyFormat.from_dict({"kind": "json", "schema": PERSON}).schema is None  # only json_schema keeps one


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"kind": "xml"}, "reply format must be one of text, json, json_schema"),
        ({"kind": "json_schema"}, "needs a schema"),
        ({"kind": "json_schema", "schema": "not an object"}, "must be a JSON object"),
        ({"kind": "json_schema", "schema": {"type": "objekt"}}, "the reply schema is unusable: at type"),
        ("json", "must be an object"),
    ],
)
def test_bad_reply_formats_are_refused(data: object, pattern: str):
    with pytest.raises(ConfigError, match=pattern):
        ReplyFormat.from_dict(data)


def test_replies_checked_against_their_format():
    person = ReplyFormat(JSON_SCHEMA, PERSON)
    assert reply_problem('{"name": "Ada", "age": 36}', person) is None
    assert reply_problem('{"name": "Ada", "age": -1}', person) == (
        "the reply does not match the schema at age: -1 is less than the minimum of 0"
    )
    assert reply_problem('{"name": "Ada"}', person) == (
        "the reply does not match the schema at the top level: 'age' is a required property"
    )
    assert (reply_problem("{oops", ReplyFormat(JSON_ANY)) or "").startswith("the reply is not JSON (line 1, column 2")
    assert reply_problem("anything at all", ReplyFormat()) is None


def test_json_reply_is_pretty_printed_for_display_only():
    sent = '{"zeta":1,"alpha":{"é":[1,2]}}'
    shown = format_json_reply(sent)
    assert shown == '{\n  "zeta": 1,\n  "alpha": {\n    "é": [\n      1,\n      2\n    ]\n  }\n}'
    assert json.loads(shown) == json.loads(sent)
    assert format_json_reply("not json") is None
