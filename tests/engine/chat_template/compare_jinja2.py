#!/usr/bin/env python3
"""Compares Loom's chat template engine with Python's jinja2, byte for byte.

Renders every template in tests/data/chat_templates/ with every conversation in
conversations.json, with and without add_generation_prompt, plus the expression snippets below,
once with jinja2 configured as Hugging Face transformers configures it and once with the C++
tool chat_template_render. Outputs must be identical, or both sides must fail; when jinja2 fails
through raise_exception, the C++ error message must be that exception's message.

  /usr/bin/python3 tests/engine/chat_template/compare_jinja2.py \
      --tool build/tests/engine/chat_template/chat_template_render [-v]

Exit status: 0 all match, 1 mismatches, 77 jinja2 is not installed (ctest reports a skip).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("jinja2 is not installed (Debian: python3-jinja2); skipping")
    sys.exit(77)

DATA_DIR = os.path.join("tests", "data", "chat_templates")

# Special tokens per template, as the models' tokenizers define them.
TOKENS = {
    "smollm2.jinja": ("<|im_start|>", "<|im_end|>"),
    "llama3.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama2.jinja": ("<s>", "</s>"),
    "mixtral.jinja": ("<s>", "</s>"),
    "mistral_v0.3.jinja": ("<s>", "</s>"),
    "qwen2.5.jinja": ("", "<|im_end|>"),
    "gemma2.jinja": ("<bos>", "<eos>"),
    "phi3.jinja": ("<s>", "<|endoftext|>"),
}


class RaisedException(jinja2.exceptions.TemplateError):
    """What the template's raise_exception() raises (transformers raises TemplateError)."""


def make_env(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
    """The environment of transformers.utils.chat_template_utils._compile_jinja_template."""

    def raise_exception(message):
        raise RaisedException(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks,
                                        keep_trailing_newline=keep_trailing_newline,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


SNIPPET_CONTEXT = {
    "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Bye?"},
    ],
    "s": "Hello World",
    "u": "Ünïcödé",
    "l": [3, 1, 2],
    "d": {"b": 1, "a": [1, 2]},
    "nested": {"x": {"y": "z"}},
    "empty": "",
    "none_v": None,
    "t": True,
    "f": 2.5,
}

SNIPPETS = [
    # Literals and Python repr.
    "{{ [1, 'a', none, true, 1.5, {'k': 'v'}] }}|{{ (1, 2) }}|{{ (1,) }}|{{ () }}|{{ {'a': (1, 2)} }}",
    "{{ \"it's\" ~ [\"it's\"] }}|{{ ['a\\nb', 'q\"q', \"x'y\\\"z\", 'tab\\there', '\\x00\\x7f'] }}",
    "{{ ['\\u00a0', '\\u3000', 'é', '😀', '\\u200b'] }}",
    "{{ 1e20 }} {{ 1.5e-5 }} {{ 1e16 }} {{ 1e15 }} {{ 0.1 + 0.2 }} {{ 1/3 }} {{ 2.0 }} {{ -0.0 }} "
    "{{ 1e-4 }} {{ 0.00001 }} {{ 123456789.123 }} {{ 1_000 }} {{ 0x1f }} {{ 1E3 }}",
    "{{ 'a\\tb\\nc\\\\d\\'e\\\"f\\x41\\u00e9\\U0001F600\\101\\q' }}|{{ \"double 'quoted'\" }}"
    "|{{ 'adjacent' ' strings' }}",
    # Arithmetic.
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 // -2 }} {{ -7 % 3 }} {{ -7 % -3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} "
    "{{ 2 ** -1 }} {{ 2 ** 0.5 }} {{ 10 / 5 }} {{ true + 1 }} {{ 3 * 'ab' }} {{ [0] * 3 }} {{ -f }}",
    "{{ 2 * 3 ** 2 }} {{ -2 ** 2 }} {{ not 1 == 2 }} {{ 1 if true else 2 + 3 }} {{ 'a' ~ 'b' | upper }} "
    "{{ -1 | abs }} {{ [1,2,3] | length - 1 }} {{ 10 - 2 - 3 }} {{ 2 ** 3 ** 2 }} {{ 1 < 2 == true }}",
    "{{ 1 + 2 ~ 3 }}",
    "{{ 1 / 0 }}",
    "{{ 1 // 0 }}",
    "{{ 'a' + 1 }}",
    "{{ 1 + none }}",
    "{{ undefined_var + 1 }}",
    "{{ undefined_var.attr }}",
    "{{ undefined_var['k'] }}",
    "{{ none.x }}|{{ none[0] }}|{{ 5.x }}|{{ s.nope }}|{{ l.nope }}|",
    "{{ d.missing.deeper }}",
    "{{ 'abc' < 1 }}",
    "{{ undefined_var < 1 }}",
    "{{ [1] + (2,) }}",
    "{{ l.append(4) }}",
    "{% for x in 5 %}{% endfor %}",
    "{% for x in none %}{% endfor %}",
    "{{ raise_exception('boom: ' ~ s) }}",
    "before{% if l | length > 2 %}{{ raise_exception('too long') }}{% endif %}after",
    # Comparisons, membership, logic.
    "{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' < 'c' }} {{ 1 < 2 > 1 }} {{ [1,2] < [1,3] }} "
    "{{ none == none }} {{ undefined_var == undefined_other }} {{ {'a':1} == {'a':1} }} "
    "{{ (1,2) == [1,2] }} {{ d == {'a': [1, 2], 'b': 1} }} {{ 'a' != 'a' }} {{ 2 >= 2.0 }}",
    "{{ 'ell' in s }} {{ 3 in l }} {{ 'b' in d }} {{ 'z' not in d }} {{ 'x' in undefined_var }} "
    "{{ 1 in l and 9 not in l }} {{ [1, 2] in [[1, 2]] }} {{ 'é' in u }}",
    "{{ 1 in s }}",
    "{{ 0 or 'x' }} {{ '' and 'y' }} {{ none or [] }} {{ not none }} {{ 'a' if 0 else 'b' }} "
    "{{ 'a' if 1 }}|{{ 'a' if 0 }}|{{ undefined_var or 'fallback' }}|{{ l and d }}",
    # Subscripts and slices.
    "{{ l[::-1] }} {{ l[1:] }} {{ l[:-1] }} {{ l[-2:] }} {{ s[::2] }} {{ s[-5:] }} {{ u[1:4] }} "
    "{{ u[::-1] }} {{ l[10:] }} {{ s[3:1] }} {{ l[::-2] }} {{ s[1:-1:3] }} {{ l[-100:100] }}",
    "{{ l[0] }} {{ l[-1] }} {{ l[99] }}|{{ s[0] }} {{ u[1] }} {{ d['a'][1] }} {{ d.a.1 }} "
    "{{ nested.x.y }} {{ nested['x']['y'] }} {{ messages[1].content }} {{ messages[-1]['role'] }}",
    "{{ l[::0] }}",
    # str and dict methods.
    "{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  x '.lstrip() }}|{{ ' x  '.rstrip() }}|"
    "{{ s.lower() }}|{{ s.upper() }}|{{ 'hello world'.title() }}|{{ 'a,b,,c'.split(',') }}|"
    "{{ '  a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ s.replace('l', 'L') }}|"
    "{{ s.replace('l', 'L', 1) }}|{{ s.startswith('He') }}|{{ s.endswith(('x', 'ld')) }}|"
    "{{ s.find('o') }}|{{ u.find('c') }}|{{ s.count('l') }}|{{ '-'.join(['a','b']) }}|"
    "{{ 'ab'.capitalize() }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ 'a-b-c'.rsplit('-', 1) }}|"
    "{{ ''.split(',') }}|{{ 'abc'.replace('', '-') }}|{{ '\\u00a0 x \\u3000'.strip() }}|"
    "{{ 'ÉCOLE'.lower() }}|{{ 'straße'.upper() == 'STRASSE' }}|{{ '12'.isdigit() }}|{{ 'x'.isupper() }}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.keys() | list }} "
    "{{ d.values() | list }} {{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} "
    "{{ d.get('zz') is none }} {{ d.items() | list }}",
    "{{ s.nosuchmethod() }}",
    # Filters.
    "{{ ' x '|trim }}|{{ 'xax'|trim('x') }}|{{ s|length }}|{{ u|length }}|{{ l|length }}|"
    "{{ d|length }}|{{ l|first }}|{{ l|last }}|{{ s|first }}|{{ s|last }}|{{ l|join }}|"
    "{{ l|join(', ') }}|{{ undefined_var|default('dv') }}|{{ none|default('dv') }}|"
    "{{ ''|default('dv', true) }}|{{ 0|d('z', boolean=true) }}|{{ l|count }}|{{ []|first }}|",
    "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ d|tojson(sort_keys=true) }}|{{ u|tojson }}|"
    "{{ u|tojson(ensure_ascii=true) }}|{{ 'a\"b\\\\c\\n\\u0001\\u007f\\u2028'|tojson }}|"
    "{{ [1.0, 1e20, none, true, -0.5]|tojson }}|{{ {}|tojson(indent=4) }}|{{ []|tojson }}|"
    "{{ d|tojson(separators=(',', ':')) }}|{{ '😀'|tojson(ensure_ascii=true) }}|"
    "{{ d|tojson(indent='\\t') }}|{{ messages|tojson(indent=0) }}|{{ nested|tojson(indent=1, sort_keys=true) }}",
    "{{ undefined_var|tojson }}",
    "{{ '42'|int }} {{ '42.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.99|int }} {{ true|int }} "
    "{{ '0x1A'|int(0, 16) }} {{ ' 12 '|int }} {{ '1e3'|int }} {{ '2.5'|float }} {{ 'x'|float }} "
    "{{ 3|float }} {{ none|int }} {{ '-7'|int }} {{ '1_000'|int }} {{ '0x10'|int }} {{ l|int }}",
    "{{ d|items|list }}|{{ 'hello wORLD'|capitalize }}|{{ 'hello wORLD-foo(bar) x_y'|title }}|"
    "{{ s|list }}|{{ d|list }}|{{ l|sort }}|{{ l|sort(reverse=true) }}|{{ ['b','A','a']|sort }}|"
    "{{ ['b','A','a']|sort(case_sensitive=true) }}|{{ l|sum }}|{{ l|min }}|{{ l|max }}|"
    "{{ [1,1,2]|unique|list }}|{{ ['b','A','a','B']|unique|list }}|{{ -3|abs }}|{{ 2.5|round }}|"
    "{{ 3.5|round }}|{{ 2.675|round(2) }}|{{ 3.14159|round(2, 'floor') }}|{{ 7|round }}|"
    "{{ l|reverse|list }}|{{ s|reverse }}|{{ 'a<b>&\"\\''|escape }}|{{ 'hello big world'|wordcount }}|"
    "{{ 'abc'|center(9) }}|{{ 'abcd'|center(9) }}|{{ messages|sort(attribute='role')|map(attribute='content')|join }}|"
    "{{ s|upper }}|{{ s|lower }}|{{ 42|string ~ 'x' }}|{{ none|string }}|{{ [1,2]|string }}|{{ l|safe }}",
    "{{ 'line1\\nline2\\n\\nline4'|indent(2) }}|{{ 'l1\\nl2'|indent(3, true) }}|"
    "{{ 'l1\\n\\nl3'|indent(2, blank=true) }}|{{ 'x'|indent('> ', first=true) }}|{{ 'a\\n'|indent }}",
    "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }}|"
    "{{ messages|rejectattr('role', 'eq', 'user')|list|length }}|{{ messages|selectattr('missing')|list }}|"
    "{{ messages|selectattr('missing', 'undefined')|list|length }}|"
    "{{ messages|selectattr('role', 'in', ['system','user'])|list|length }}|{{ l|select('odd')|list }}|"
    "{{ l|reject('odd')|list }}|{{ [0,1,'',none,'a']|select|list }}|{{ l|map('string')|join('-') }}|"
    "{{ messages|map(attribute='missing', default='dflt')|list }}|{{ ['a','B']|map('upper')|list }}|"
    "{{ messages|selectattr('role', 'defined')|list|length }}|{{ [nested]|map(attribute='x.y')|list }}",
    "{{ {'b':1,'A':2,'a':0}|dictsort }}|{{ {'b':1,'a':2}|dictsort(by='value') }}|{{ l|batch(2)|list }}|"
    "{{ l|batch(2, 'x')|list }}",
    "{{ 5|length }}",
    "{{ l|items|list }}",
    # Tests.
    "{{ none is none }} {{ undefined_var is undefined }} {{ d is mapping }} {{ l is sequence }} "
    "{{ s is iterable }} {{ 1 is number }} {{ true is number }} {{ 1.5 is float }} {{ 1 is integer }} "
    "{{ true is integer }} {{ true is boolean }} {{ true is true }} {{ 1 is true }} {{ false is false }} "
    "{{ 5 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'ab' is lower }} {{ 'AB' is upper }} "
    "{{ 1 is sameas 1 }} {{ none is sameas none }} {{ l is sameas l }} {{ 2 is equalto 2 }} "
    "{{ 2 is eq(2) }} {{ 2 is ne 3 }} {{ 3 is gt 2 }} {{ 3 is ge 3 }} {{ 2 is lt 3 }} {{ 3 is le 2 }} "
    "{{ 'a' is in 'abc' }} {{ 1 is in l }} {{ raise_exception is defined }} {{ strftime_now is defined }} "
    "{{ 'upper' is filter }} {{ 'odd' is test }} {{ s is not string }} {{ none is not none }} "
    "{{ undefined_var is iterable }} {{ d is iterable }} {{ 1 is iterable }} {{ s is sequence }} "
    "{{ range is callable }} {{ 'x' is callable }} {{ not s is string }}",
    # Loops.
    "{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
    "{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.depth }}|{% endfor %}",
    "{% for x in l if x > 1 %}{{ x }}{{ loop.index }}{{ loop.last }},{% else %}none{% endfor %}",
    "{% for x in [] %}a{% else %}empty{% endfor %}{% for x in l if x > 9 %}a{% else %}filtered{% endfor %}",
    "{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% if x == 2 %}{% break %}{% endif %}"
    "{% endfor %}",
    "{% for a, b in [[1,2],[3,4]] %}{{ a + b }}{% endfor %}{% for (a, b) in d.items() %}{{ a }}{% endfor %}",
    "{% for a, b in [[1,2,3]] %}{% endfor %}",
    "{% for c in 'héllo' %}[{{ c }}]{% endfor %}{% for k in d %}{{ k }}{% endfor %}",
    "{% for x in l %}{% for y in l %}{{ loop.index }}{% endfor %}{{ loop.index }};{% endfor %}",
    "{% for x in l %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}",
    "{% for x in l %}{{ loop.cycle('a', 'b') }}{% endfor %}",
    "{% for i in range(3) %}{{ i }}{% endfor %}{% for i in range(1, 10, 3) %}{{ i }}{% endfor %}"
    "{% for i in range(5, 0, -2) %}{{ i }}{% endfor %}{{ range(0) | list }}",
    "{{ range(100001) | length }}",
    # Scoping.
    "{% set x = 1 %}{% for i in l %}[{{ x }}]{% set x = i %}{{ x }}{% endfor %}{{ x }}",
    "{% if true %}{% set y = 2 %}{% endif %}{{ y }}",
    "{% set ns = namespace(v=0) %}{% for i in l %}{% set ns.v = ns.v + i %}{% endfor %}{{ ns.v }}{{ ns }}",
    "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns.c }}|{{ dict(x=1) }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (1, 2) %}{{ t }}{% set messages = [] %}{{ messages }}",
    "{% set block %}inner {{ s }}{% endset %}[{{ block }}]{% set blk | upper %}text{% endset %}{{ blk }}",
    "{% filter upper %}hello {{ s }}{% endfilter %}",
    "{% set x = 1 %}{% set x.y = 2 %}",
    # Macros.
    "{% macro m(a, b='B') %}<{{ a }}|{{ b }}|{{ s }}>{% endmacro %}{{ m(1) }}{{ m(1, 2) }}"
    "{{ m(b=3, a=4) }}{{ m() }}",
    "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n }}*{{ fact(n - 1) }}{% endif %}{% endmacro %}"
    "{{ fact(5) }}",
    "{% set top = 'T' %}{% macro m() %}{{ top }}{{ loop_var }}{% endmacro %}"
    "{% for loop_var in [1] %}{{ m() }}{% endfor %}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}",
    # Whitespace control and tags.
    "  {% if true %}\n    yes\n  {% endif %}\nend",
    "{% for i in l %}\n  {{ i }}\n{% endfor %}\n",
    "a  {%- if true -%}  b  {%- endif -%}  c",
    "a\n  {#- comment -#}\n  b",
    "  {{ s }}  \n  {% if true %}x{% endif %}  \n",
    "{%+ if true %}x{% endif %}\n  {%+ if true +%}\ny{% endif %}",
    "line\n    {# a comment #}\nnext",
    "text {{- ' trimmed ' -}} text",
    "x\n\n{% raw %}{{ not evaluated }}{% endraw %}\n",
    "trailing newline\n",
    "two trailing newlines\n\n",
    "a\r\nb\r\n{% if true %}\r\nc{% endif %}",
    "{% if true %}  \n  x\n{% endif %}\t \n  {%- if true %}y{% endif %}",
    "{{ {'a': {'b': 1}} }}{{ {'x': 1}['x'] }}",
    "\n  {% for i in l -%}\n    {{ i }}\n  {%- endfor %}\n",
    # Parse errors (both must fail).
    "{{ x | nosuchfilter }}",
    "{{ x is nosuchtest }}",
    "{% if false %}{{ x | nosuchfilter }}{% elif x is nosuchtest %}{% endif %}ok",
    "{{ x | nosuchfilter if false else 'y' }}",
    "{% if true %}{{ x | nosuchfilter }}{% endif %}",
    "{% if false %}{% for i in l %}{{ i | nosuchfilter }}{% endfor %}{% endif %}",
    "{% if false %}{% macro m() %}{{ 1 | nosuchfilter }}{% endmacro %}{% endif %}",
    "{% if x %}no end",
    "{{ x ",
    "{% for %}{% endfor %}",
    "{{ 1 + }}",
    "{% endfor %}",
    "{% unknowntag %}",
    "{{ 'unterminated }}",
    "{# unclosed comment",
    "{% if x %}{% else %}{% else %}{% endif %}",
    "{{ (1, 2 }}",
]

# Snippets also rendered with Jinja's own defaults (no trim_blocks / lstrip_blocks) and with
# trim_blocks only.
WHITESPACE_OPTIONS = [
    {"trim_blocks": False, "lstrip_blocks": False},
    {"trim_blocks": True, "lstrip_blocks": False},
    {"trim_blocks": False, "lstrip_blocks": True, "keep_trailing_newline": True},
]


def render_python(source, context, options=None):
    env = make_env(**(options or {}))
    try:
        return {"ok": True, "output": env.from_string(source).render(**context)}
    except RaisedException as e:
        return {"ok": False, "error": str(e), "raised": True}
    except Exception as e:  # noqa: BLE001 - any jinja2 failure is a comparison outcome
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "raised": False}


def build_cases():
    """Returns (description, source, context, options) tuples."""
    cases = []
    with open(os.path.join(DATA_DIR, "conversations.json"), encoding="utf-8") as f:
        conversations = json.load(f)
    templates = sorted(n for n in os.listdir(DATA_DIR) if n.endswith(".jinja"))
    for name in templates:
        with open(os.path.join(DATA_DIR, name), encoding="utf-8", newline="") as f:
            source = f.read()
        bos, eos = TOKENS.get(name, ("<s>", "</s>"))
        for conv in conversations:
            for add_generation_prompt in (False, True):
                context = {"messages": conv["messages"], "add_generation_prompt": add_generation_prompt,
                           "bos_token": bos, "eos_token": eos}
                context.update(conv.get("vars", {}))
                cases.append((f"{name} x {conv['name']} agp={add_generation_prompt}", source,
                              context, None))
    for i, snippet in enumerate(SNIPPETS):
        cases.append((f"snippet #{i}: {snippet[:60]!r}", snippet, SNIPPET_CONTEXT, None))
        if "\n" in snippet or "{%" in snippet or "{#" in snippet:
            for options in WHITESPACE_OPTIONS:
                cases.append((f"snippet #{i} {options}: {snippet[:50]!r}", snippet,
                              SNIPPET_CONTEXT, options))
    return cases


def run_cpp(tool, cases):
    jobs = [{"source": source, "context": context, "options": options or {}}
            for _, source, context, options in cases]
    proc = subprocess.run([tool, "--batch"], input=json.dumps(jobs).encode("utf-8"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        sys.exit(f"{tool} --batch failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return json.loads(proc.stdout.decode("utf-8"))


def check_cli(tool):
    """The single-template mode: output on stdout, errors on stderr with exit status 1."""
    failures = []
    template = os.path.join(DATA_DIR, "smollm2.jinja")
    context = {"messages": [{"role": "user", "content": "Hi ☃"}], "add_generation_prompt": True}
    proc = subprocess.run([tool, template], input=json.dumps(context).encode(), capture_output=True,
                          check=False)
    with open(template, encoding="utf-8") as f:
        expected = render_python(f.read(), context)["output"]
    if proc.returncode != 0 or proc.stdout.decode("utf-8") != expected:
        failures.append(f"CLI render: rc={proc.returncode} out={proc.stdout!r}")
    with tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False) as f:
        f.write("{{ raise_exception('custom failure') }}")
        bad = f.name
    try:
        proc = subprocess.run([tool, bad], input=b"{}", capture_output=True, check=False)
        if proc.returncode != 1 or b"custom failure" not in proc.stderr:
            failures.append(f"CLI error: rc={proc.returncode} stderr={proc.stderr!r}")
    finally:
        os.unlink(bad)
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", required=True, help="path to chat_template_render")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()

    cases = build_cases()
    expected = [render_python(source, context, options) for _, source, context, options in cases]
    actual = run_cpp(args.tool, cases)
    if len(actual) != len(cases):
        sys.exit(f"expected {len(cases)} results, got {len(actual)}")

    passed, failures, errors_matched = 0, [], 0
    for (desc, _, _, _), want, got in zip(cases, expected, actual):
        if want["ok"] and got["ok"] and want["output"] == got["output"]:
            passed += 1
        elif not want["ok"] and not got["ok"] and (not want["raised"] or
                                                   want["error"] == got["error"]):
            passed += 1
            errors_matched += 1
        else:
            failures.append((desc, want, got))
        if args.verbose:
            print(f"{'ok ' if not failures or failures[-1][0] != desc else 'BAD'} {desc}")

    cli_failures = check_cli(args.tool)
    for desc, want, got in failures:
        print(f"MISMATCH {desc}\n  jinja2: {json.dumps(want, ensure_ascii=False)}\n"
              f"  loom:   {json.dumps(got, ensure_ascii=False)}")
    for failure in cli_failures:
        print(f"MISMATCH {failure}")
    print(f"{passed}/{len(cases)} jinja2 comparisons pass ({errors_matched} of them both failing), "
          f"{len(failures)} mismatches, {len(cli_failures)} CLI failures")
    return 1 if failures or cli_failures else 0


if __name__ == "__main__":
    sys.exit(main())
