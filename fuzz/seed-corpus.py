#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets (docs/fuzzing.md, seeds).

Client request bodies are written as they are; the providers' answers,
streamed and not, and their error bodies are what the mock LLM sends for
them (start it first: `portcullis mock-llm --port 18099`). Gateway and
managed configurations come from examples/, manifests from policies/.
Usage: fuzz/seed-corpus.py OUT_DIR (then `cargo fuzz cmin` each target).
"""
import http.client
import json
import pathlib
import sys
import urllib.error
import urllib.request

MOCK = "http://127.0.0.1:18099"
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1])

TOOL = {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}

openai = [
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}]},
    {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
     "temperature": 0.2, "max_tokens": 64, "stop": ["\n"],
     "messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [
                      {"type": "text", "text": "What is this?"},
                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
    {"model": "gpt-4o", "tools": [{"type": "function", "function": TOOL}], "tool_choice": "auto",
     "response_format": {"type": "json_object"},
     "messages": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]},
    {"model": "text-embedding-3-small", "input": ["one", "two"], "dimensions": 8},
]
# The OpenAI bodies the gateway forwards as they came: legacy completions
# and moderations (after the embeddings body, which `openai[3]` names).
legacy = {"model": "gpt-3.5-turbo-instruct", "prompt": ["Say", "hello"], "suffix": "!",
          "echo": True, "logprobs": 2, "best_of": 2, "max_tokens": 16}
openai += [legacy, dict(legacy, prompt=[[1, 2, 3]], stream=True, stream_options={"include_usage": True}),
           {"model": "omni-moderation-latest", "input": [
               {"type": "text", "text": "I will kill it"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]
anthropic = [
    {"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.",
     "messages": [{"role": "user", "content": "Say hello"}]},
    {"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": True,
     "tools": [{"name": "get_weather", "description": "Weather", "input_schema": TOOL["parameters"]}],
     "tool_choice": {"type": "tool", "name": "get_weather"},
     "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "hm", "signature": "sig"},
                      {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                      {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]},
]
responses = [
    {"model": "gpt-5", "input": "Say hello", "instructions": "Be brief."},
    {"model": "gpt-5", "stream": True, "max_output_tokens": 64, "reasoning": {"effort": "low"},
     "text": {"format": {"type": "json_schema", "name": "w", "schema": TOOL["parameters"], "strict": True}},
     "input": [{"role": "user", "content": [
         {"type": "input_text", "text": "What is this?"},
         {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
         {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}]}]},
    {"model": "gpt-5", "tools": [dict(TOOL, type="function")], "tool_choice": {"type": "function", "name": "get_weather"},
     "input": [{"type": "message", "role": "user", "content": "Weather in Paris?"},
               {"type": "reasoning", "id": "rs_1", "summary": []},
               {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                "arguments": "{\"city\":\"Paris\"}"},
               {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]},
]
gemini = [
    {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
     "systemInstruction": {"parts": [{"text": "Be brief."}]},
     "generationConfig": {"temperature": 0.5, "maxOutputTokens": 64, "stopSequences": ["x"],
                          "responseMimeType": "application/json"}},
    {"contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"},
                                              {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
                  {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                  {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}}]}],
     "tools": [{"functionDeclarations": [TOOL]}],
     "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}},
]


# What each provider's mock wants to see before it answers.
SIGV4 = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, "
         "SignedHeaders=host;x-amz-date, Signature=abc")
HEADERS = {
    "v1": {"authorization": "Bearer k", "x-api-key": "k", "anthropic-version": "2023-06-01"},
    "v1beta": {"x-goog-api-key": "k"},
    "model": {"authorization": SIGV4, "x-amz-date": "20250101T000000Z"},
}


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def post(path, body, behaviour=None):
    if behaviour:
        req = urllib.request.Request(MOCK + "/_mock/behaviour", json.dumps(behaviour).encode(),
                                     {"content-type": "application/json"})
        urllib.request.urlopen(req).read()
    req = urllib.request.Request(MOCK + path, json.dumps(body).encode(),
                                 dict(HEADERS[path.split("/")[1]], **{"content-type": "application/json"}))
    try:
        return urllib.request.urlopen(req).read()
    except urllib.error.HTTPError as e:
        return e.read()
    except http.client.IncompleteRead as e:  # a stream cut on purpose
        return e.partial


for target, bodies in [("inbound_openai", openai), ("inbound_anthropic", anthropic),
                       ("inbound_gemini", gemini), ("inbound_responses", responses)]:
    for i, b in enumerate(bodies):
        write(target, f"request-{i}", json.dumps(b))

# The providers' answers: one plain, one with a tool call, streamed and not,
# then an error body.
plain_openai = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
tools_openai = dict(openai[2], messages=[{"role": "user", "content": "Weather?"}])
plain_anthropic = anthropic[0]
tools_anthropic = dict(anthropic[1], stream=False, messages=[{"role": "user", "content": "Weather?"}])
plain_gemini = gemini[0]
tools_gemini = dict(gemini[1], contents=[{"role": "user", "parts": [{"text": "Weather?"}]}])
plain_bedrock = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
tools_bedrock = dict(plain_bedrock, toolConfig={"tools": [{"toolSpec": {
    "name": "get_weather", "description": "Weather", "inputSchema": {"json": TOOL["parameters"]}}}]})
calls = {
    "openai": ("/v1/chat/completions", "/v1/chat/completions", plain_openai, tools_openai,
               lambda b: dict(b, stream=True, stream_options={"include_usage": True})),
    "anthropic": ("/v1/messages", "/v1/messages", plain_anthropic, tools_anthropic,
                  lambda b: dict(b, stream=True)),
    "gemini": ("/v1beta/models/gemini-2.5-flash:generateContent",
               "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
               plain_gemini, tools_gemini, lambda b: b),
    "bedrock": ("/model/anthropic.claude-3-haiku/converse",
                "/model/anthropic.claude-3-haiku/converse-stream",
                plain_bedrock, tools_bedrock, lambda b: b),
}
for name, (path, stream_path, plain, tools, streamed) in calls.items():
    for i, body in enumerate([plain, tools]):
        write(f"provider_{name}_response", f"answer-{i}", post(path, body))
        write(f"provider_{name}_stream", f"stream-{i}", post(stream_path, streamed(body)))
    write(f"provider_{name}_response", "error-429", post(path, plain, {"status": 429, "times": 1}))
    write(f"provider_{name}_stream", "cut", post(stream_path, streamed(plain),
                                                 {"cut_after_chunks": 2, "times": 1}))
write("provider_openai_response", "embeddings", post("/v1/embeddings", openai[3]))
write("provider_openai_response", "completions", post("/v1/completions", legacy))
write("provider_openai_response", "moderations", post("/v1/moderations", openai[-1]))
write("provider_openai_stream", "completions",
      post("/v1/completions", dict(legacy, prompt="Say hello", stream=True,
                                   stream_options={"include_usage": True})))
write("provider_gemini_response", "embeddings",
      post("/v1beta/models/text-embedding-004:batchEmbedContents",
           {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "one"}]}}]}))

# The SSE and event-stream decoders see the same bytes as the stream adapters.
for name in ["openai", "anthropic", "gemini"]:
    for f in (OUT / f"provider_{name}_stream").iterdir():
        write("sse", f"{name}-{f.name}", f.read_bytes())
for f in (OUT / "provider_bedrock_stream").iterdir():
    write("eventstream", f.name, f.read_bytes())

for f in sorted((ROOT / "examples").glob("*.yaml")):
    write("gateway_config", f.name, f.read_bytes())
for f in sorted((ROOT / "policies").glob("*/manifest.json")):
    write("policy_manifest", f.parent.name, f.read_bytes())
for f in sorted((ROOT / "policies").glob("*/policy.json")):
    write("policy_manifest", f.parent.name, f.read_bytes())
manifest = json.loads((ROOT / "policies/pii-masking/policy.json").read_text())
manifest["sha256"] = "ab" * 32
write("policy_manifest", "hub-version", json.dumps(dict(
    manifest, digest="sha256:" + "ab" * 32, size=1234, publisher="ci",
    published_at="2025-01-01T00:00:00Z", yanked=False)))
write("policy_manifest", "publish-request", json.dumps({"manifest": manifest, "module": "AGFzbQ=="}))

# A managed configuration: each example file as admin would hand it over.
import yaml  # noqa: E402 (only this part needs PyYAML)
for f in sorted((ROOT / "examples").glob("*.yaml")):
    config = yaml.safe_load(f.read_text())
    config.pop("listen", None)
    config.pop("ops_listen", None)
    write("managed_config", f.stem, json.dumps({
        "version": "v1", "config": config, "secrets": {"OPENAI_API_KEY": "sk-x"},
        "deployments": [{"deployment_id": "d1", "proxy_id": "llmtest", "revision": 3}]}))
