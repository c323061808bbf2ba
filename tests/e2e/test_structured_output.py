"""Structured output on the real `loom serve`: JSON-schema and grammar-constrained decoding and
OpenAI tool calls, driven by the official openai SDK, with every output checked by a real JSON
Schema validator (`jsonschema`).
"""
import json
import random
from typing import List, Literal

import grpc
import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

# Ten schemas of varied shape. Strings carry maxLength so that a 135M model sampling at
# temperature 1 still finishes well inside max_tokens; the grammar enforces every bound.
SCHEMAS = {
    "flat": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
        "member": {"type": "boolean"}}, "required": ["name", "age", "member"],
        "additionalProperties": False},
    "enum_const": {"type": "object", "properties": {
        "colour": {"enum": ["red", "green", "blue"]}, "version": {"const": 2},
        "size": {"enum": ["S", "M", "L", 1, None]}}, "required": ["colour", "version", "size"]},
    "array_bounds": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                 "minItems": 1, "maxItems": 3}}, "required": ["tags"]},
    "empty_array_ok": {"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
        "required": ["items"]},
    "nested": {"type": "object", "properties": {
        "person": {"type": "object", "properties": {
            "first": {"type": "string", "maxLength": 12},
            "address": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 12}, "zip": {"type": "integer"}},
                "required": ["city", "zip"]}},
            "required": ["first", "address"]}}, "required": ["person"]},
    "numbers": {"type": "object", "properties": {
        "x": {"type": "number"}, "n": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["x", "n", "ok"]},
    "any_of": {"type": "object", "properties": {
        "value": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 10},
                            {"type": "null"}]}}, "required": ["value"]},
    "ref_defs": {"$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}},
        "type": "object", "properties": {"a": {"$ref": "#/$defs/point"},
                                         "b": {"$ref": "#/$defs/point"}},
        "required": ["a", "b"]},
    "string_lengths": {"type": "object", "properties": {
        "code": {"type": "string", "minLength": 3, "maxLength": 3},
        "note": {"type": "string", "maxLength": 15}}, "required": ["code", "note"]},
    "pattern": {"type": "object", "properties": {
        "phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"},
        "id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"}}, "required": ["phone", "id"]},
    "top_level_array": {"type": "array", "items": {"type": "object", "properties": {
        "k": {"type": "string", "maxLength": 6}, "v": {"type": "integer"}},
        "required": ["k", "v"]}, "minItems": 1, "maxItems": 2},
}

PROMPT = "Reply with JSON about a person called Ada who lives in Paris."


def json_schema_format(name, schema):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_sampled_generations_validate(client, name):
    """20 samples per schema (11 schemas: 220 generations) at temperature 1 with random seeds."""
    schema = SCHEMAS[name]
    seed = random.randrange(1 << 31)
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": PROMPT}], n=20, temperature=1.0,
        seed=seed, max_tokens=200, response_format=json_schema_format(name, schema))
    assert len(r.choices) == 20
    for c in r.choices:
        assert c.finish_reason == "stop", (seed, c.message.content)
        jsonschema.validate(json.loads(c.message.content), schema)


def test_json_object_mode_and_streaming(client):
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Is Paris in France? Reply with a "
                                    "JSON object with one key, answer."}],
        max_tokens=200, temperature=0.7, seed=3, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = SCHEMAS["nested"]
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": PROMPT}], max_tokens=200,
        temperature=1.0, seed=5, stream=True, response_format=json_schema_format("n", schema))
    parts = [ch.choices[0].delta.content or "" for ch in stream if ch.choices]
    assert len([p for p in parts if p]) > 3  # streamed token by token, not in one piece
    jsonschema.validate(json.loads("".join(parts)), schema)


def test_grammar_extension_and_completions(server):
    grammar = 'root ::= "The answer is " ("yes" | "no") "."'
    for body, path in [({"messages": [{"role": "user", "content": "Is the sky blue?"}]},
                        "/v1/chat/completions"),
                       ({"prompt": "Q: Is fire cold?\nA:"}, "/v1/completions")]:
        r = httpx.post(server.url + path, timeout=60,
                       json={**body, "grammar": grammar, "max_tokens": 20, "temperature": 1.0})
        assert r.status_code == 200, r.text
        c = r.json()["choices"][0]
        text = c["message"]["content"] if "message" in c else c["text"]
        assert text in ("The answer is yes.", "The answer is no.")
        assert c["finish_reason"] == "stop"


class Weather(BaseModel):
    city: str = Field(max_length=20)
    unit: Literal["celsius", "fahrenheit"]
    days: List[int] = Field(max_length=3)


def test_sdk_structured_output_parse(client):
    r = client.beta.chat.completions.parse(
        model="default", messages=[{"role": "user", "content": "Weather in Paris for 2 days?"}],
        response_format=Weather, max_tokens=200, temperature=0)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Weather)
    assert parsed.unit in ("celsius", "fahrenheit")


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 30},
            "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_tool_calls(client, choice):
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=TOOLS, tool_choice=choice, max_tokens=200, temperature=0)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.tool_calls
    for call in c.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
    if isinstance(choice, dict):
        assert {call.function.name for call in c.message.tool_calls} == {"add"}

    # The result goes back as a `tool` message; the model then answers (auto may call again or
    # answer in text: both are valid OpenAI responses).
    messages = [{"role": "user", "content": "What is 2 plus 3?"}, c.message.model_dump(),
                {"role": "tool", "tool_call_id": c.message.tool_calls[0].id, "content": "5"}]
    r2 = client.chat.completions.create(model="default", messages=messages, tools=TOOLS,
                                        temperature=0)  # max_tokens: what the context leaves
    c2 = r2.choices[0]
    assert c2.finish_reason in ("stop", "tool_calls")
    assert c2.message.content or c2.message.tool_calls


def test_streamed_tool_calls_through_the_sdk(client):
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=TOOLS, tool_choice="required", max_tokens=200, temperature=0, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        for tc in d.tool_calls or []:
            entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            if tc.function.name:
                entry["name"] += tc.function.name
            entry["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), PARAMS[call["name"]])


@pytest.mark.parametrize("body,param,needle", [
    ({"response_format": json_schema_format("x", {"type": "object", "patternProperties": {}})},
     "response_format", "patternProperties"),
    ({"grammar": "root ::= undefined_rule"}, "grammar", "undefined_rule"),
    ({"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "grammar",
     "cannot be combined"),
    ({"response_format": {"type": "yaml"}}, "response_format", "yaml"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice", "nope"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools", "bad name"),
], ids=["unsupported_keyword", "bad_grammar", "two_constraints", "unknown_format",
        "unknown_tool", "bad_tool_name"])
def test_bad_constraints_are_400(server, body, param, needle):
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                   json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and needle in err["message"], err


def test_grpc_json_schema(server, loom_pb):
    pb, rpc = loom_pb
    schema = SCHEMAS["flat"]
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = rpc.GenerationStub(ch)
        msgs = list(stub.Chat(pb.ChatRequest(
            messages=[pb.ChatMessage(role="user", content=PROMPT)],
            params=pb.GenerationParams(max_tokens=200, json_schema=json.dumps(schema),
                                       sampling=pb.SamplingParams(temperature=1.0, seed=11)))))
        jsonschema.validate(json.loads("".join(m.text for m in msgs)), schema)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Chat(pb.ChatRequest(
                messages=[pb.ChatMessage(role="user", content="Hi")],
                params=pb.GenerationParams(grammar="root ::= ("))))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
