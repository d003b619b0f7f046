"""Drives a Portcullis proxy with the official OpenAI Python client.

Usage: python3 openai_client.py BASE_URL API_KEY MODEL [responses]
Prints one JSON object with what the client saw; with `responses`, only
the Responses API calls (for proxies whose provider is reached through
the gateway's translation).
"""
import json
import sys

import openai

base_url, api_key, model = sys.argv[1], sys.argv[2], sys.argv[3]
only_responses = sys.argv[4:] == ["responses"]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


def responses_api():
    """The Responses API, plain, streamed as raw events, and through the
    client's stream helper (which rebuilds the response from the events)."""
    resp = client.responses.create(
        model=model, instructions="Be brief.", input="Hello from Python"
    )
    streamed = ""
    stream_usage = None
    for event in client.responses.create(
        model=model, instructions="Be brief.", input="Hello from Python", stream=True
    ):
        if event.type == "response.output_text.delta":
            streamed += event.delta
        if event.type == "response.completed":
            stream_usage = event.response.usage.total_tokens
    with client.responses.stream(
        model=model, instructions="Be brief.", input="Hello from Python"
    ) as stream:
        for _ in stream:
            pass
        helper = stream.get_final_response()
    tool = client.responses.create(
        model=model,
        input=[{"role": "user", "content": "Weather in Rome"}],
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
    )
    call = next(item for item in tool.output if item.type == "function_call")
    return {
        "plain": resp.output_text,
        "usage": {
            "input": resp.usage.input_tokens,
            "cached": resp.usage.input_tokens_details.cached_tokens,
            "output": resp.usage.output_tokens,
            "reasoning": resp.usage.output_tokens_details.reasoning_tokens,
            "total": resp.usage.total_tokens,
        },
        "streamed": streamed,
        "stream_total": stream_usage,
        "helper": helper.output_text,
        "helper_total": helper.usage.total_tokens,
        "tool_name": call.name,
        "tool_args": call.arguments,
    }


if only_responses:
    print(json.dumps({"responses": responses_api()}))
    sys.exit(0)

plain = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hello from Python"}]
)
streamed = ""
usage = None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Hello from Python"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage.total_tokens

tool = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Weather in Rome"}],
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
)
# Legacy text completions, plain and streamed (forwarded to the OpenAI
# route as they came), and moderations (the proxy's provider lists its
# models, so the moderation call names one of them).
legacy = client.completions.create(model=model, prompt="Hello from Python", max_tokens=50)
legacy_streamed = ""
legacy_stream_total = None
for chunk in client.completions.create(
    model=model,
    prompt="Hello from Python",
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices:
        legacy_streamed += chunk.choices[0].text
    if chunk.usage:
        legacy_stream_total = chunk.usage.total_tokens
moderation = client.moderations.create(model=model, input=["I will kill it", "Hello"])

models = [m.id for m in client.models.list()]
emb = client.embeddings.create(model=model, input="hello world")

error = None
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}]
    )
except openai.AuthenticationError as e:
    error = {"status": e.status_code, "code": e.code}

print(json.dumps({
    "plain": plain.choices[0].message.content,
    "plain_total": plain.usage.total_tokens,
    "streamed": streamed,
    "stream_total": usage,
    "tool_name": tool.choices[0].message.tool_calls[0].function.name,
    "tool_args": tool.choices[0].message.tool_calls[0].function.arguments,
    "models": models,
    "embedding_len": len(emb.data[0].embedding),
    "auth_error": error,
    "completions": {
        "plain": legacy.choices[0].text,
        "finish": legacy.choices[0].finish_reason,
        "prompt": legacy.usage.prompt_tokens,
        "total": legacy.usage.total_tokens,
        "streamed": legacy_streamed,
        "stream_total": legacy_stream_total,
    },
    "moderations": [r.flagged for r in moderation.results],
    "moderation_violence": moderation.results[0].categories.violence,
    "responses": responses_api(),
}))
