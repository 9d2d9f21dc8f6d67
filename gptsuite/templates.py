"""Prompt templates: how a dataset lays out its documents, so that sampling can ask the same way.

A template is a small JSON dict that a dataset writes into meta.json, train.py copies into the
checkpoint, and sample.py reads back:

    {"format": "ABSTRACT:\\n{abstract}\\n\\nARTICLE:\\n{article}",  # str.format, one field per part
     "prompt_field": "abstract",                                     # what --start fills in
     "stop": "<|endoftext|>"}                                        # generation ends here

Every field is stripped of surrounding whitespace before it is put in, in training documents and
prompts alike. The prompt is the format up to the first field after prompt_field, e.g.
"ABSTRACT:\\n<your abstract>\\n\\nARTICLE:\\n", and the model continues with the article. `stop`
names the tokenizer's end-of-document token (GPT-2's <|endoftext|>, which ends every document).
A templated dataset marks the response (format_marked): training counts the article's tokens
and its end token, not the abstract's (masks.py; --loss_on=all counts every token).
"""

import string

from gptsuite.chat import Marked
from gptsuite.errors import UserError

END_OF_TEXT = "<|endoftext|>"


def fields(template: dict) -> list[str]:
    """The field names of the format, in order."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template["format"]) if name is not None]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"the prompt template {template!r} is malformed ({e}); prepare the dataset again") from None


def format_document(template: dict, values: dict[str, str]) -> str:
    """A training document: every field of the format filled in, each stripped."""
    names = fields(template)
    missing = [n for n in names if n not in values]
    if missing:
        raise UserError(f"a document has no {', '.join(missing)}; the template needs {', '.join(names)}")
    return template["format"].format(**{n: str(values[n]).strip() for n in names})


def format_marked(template: dict, values: dict[str, str]) -> Marked:
    """A training document with its response marked: the tokens after the prompt (format_prompt of
    the prompt field) count in the loss, with the end token after them; the prompt is context."""
    text = format_document(template, values)
    prompt = format_prompt(template, str(values[template["prompt_field"]]))
    assert text.startswith(prompt)
    return Marked(text, [(len(prompt), len(text))])


def format_prompt(template: dict, text: str) -> str:
    """The start of a document with `text` as its prompt field, up to where the next field begins."""
    names, prompt_field = fields(template), template.get("prompt_field")
    if not names or names[0] != prompt_field:
        raise UserError(f"the prompt template's prompt_field {prompt_field!r} must be the first field of {template['format']!r}; prepare the dataset again")
    prompt, filled = "", False
    for literal, name, spec, _ in string.Formatter().parse(template["format"]):
        prompt += literal
        if name is None:
            continue
        if filled:  # the next field (the response) begins here
            break
        prompt += format(text.strip(), spec or "")
        filled = True
    return prompt
