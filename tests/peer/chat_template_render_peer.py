#!/usr/bin/env python3
"""Reference renderings of chat templates for apr's Jinja subset
(tests/test_chat_template.c compares them byte for byte).

For every template in llama.cpp's models/templates/ and the tinycoder
fixture's, a few conversations (system + user, user alone, multi-turn,
ending on the assistant, non-ASCII and newlines in the content), each with
add_generation_prompt false and true, are rendered by transformers'
render_jinja_template -- the function apply_chat_template calls, with its
sandboxed environment, tojson, raise_exception and namespace -- with
strftime_now fixed at NOW and the variables apply_chat_template passes
(messages, tools=None, documents=None, add_generation_prompt, bos_token,
eos_token). A template jinja2 cannot render records the error instead.

usage: chat_template_render_peer.py LLAMA_CPP_SRC TINYCODER_DIR OUT_JSON
Exit 0 written, 77 skip (transformers / jinja2 missing).
"""
import datetime as dt
import glob
import json
import os
import sys

try:
    import jinja2  # noqa: F401
    from transformers.utils import chat_template_utils as ctu
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

NOW = dt.datetime(2026, 1, 15, 10, 30, 5, tzinfo=dt.timezone.utc)


class FixedDatetime(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW.replace(tzinfo=None)


ctu.datetime = FixedDatetime  # strftime_now reads ctu.datetime.now()

CONVERSATIONS = {
    "system+user": [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Hello! What is 2+2?"}],
    "user": [{"role": "user", "content": "Write a haiku about the sea."}],
    "multi-turn": [{"role": "system", "content": "Answer briefly."},
                   {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke.\nA short one."}],
    "ends-on-assistant": [{"role": "user", "content": "Say yes."},
                          {"role": "assistant", "content": "Yes."}],
    "unicode": [{"role": "user", "content": "Caf\u00e9 \u2615 \u2014 \"quotes\" and 'apostrophes' \\ tab\tend"}],
}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
TOOL_CALL_TURNS = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "id": "call_1", "function": {
        "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
    {"role": "tool", "content": "{\"temperature\": 21}", "tool_call_id": "call_1", "name": "get_weather"},
]
# (messages, tools): the last two exercise the templates' tool paths (tojson of schemas and calls)
CONVERSATIONS["tools"] = ([{"role": "user", "content": "What's the weather in Paris?"}], [WEATHER_TOOL])
CONVERSATIONS["tool-call"] = (TOOL_CALL_TURNS, [WEATHER_TOOL])
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}


def render(source, messages, tools, agp):
    rendered, _ = ctu.render_jinja_template(
        conversations=[messages], tools=tools, documents=None, chat_template=source,
        add_generation_prompt=agp, **SPECIAL)
    return rendered[0]


def main():
    src, tiny, out = sys.argv[1:4]
    files = sorted(glob.glob(os.path.join(src, "models", "templates", "*.jinja")))
    templates = [(os.path.basename(f)[:-len(".jinja")], open(f, encoding="utf-8").read()) for f in files]
    tc = json.load(open(os.path.join(tiny, "tokenizer_config.json")))
    templates.append(("tinycoder", tc["chat_template"]))
    doc = {"now": int(NOW.timestamp()), "templates": []}
    for name, source in templates:
        cases = []
        for conv_name, conv in CONVERSATIONS.items():
            messages, tools = conv if isinstance(conv, tuple) else (conv, None)
            for agp in (False, True):
                vars_ = {"messages": messages, "tools": tools, "documents": None, "add_generation_prompt": agp,
                         **SPECIAL}
                case = {"name": f"{conv_name} agp={agp}", "vars": vars_, "text": None, "error": None}
                try:
                    case["text"] = render(source, messages, tools, agp)
                except Exception as e:  # the template refuses this conversation (or jinja2 cannot compile it)
                    case["error"] = f"{type(e).__name__}: {e}"[:300]
                cases.append(case)
        doc["templates"].append({"name": name, "source": source, "cases": cases})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    print(f"{len(templates)} templates, {sum(len(t['cases']) for t in doc['templates'])} renderings -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
