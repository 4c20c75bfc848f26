"""The chat format: the embedded policy's special tokens and template, and one exchange as the model reads it."""

from __future__ import annotations

from typing import Any

PAD, BOS, END, USER, ASSISTANT = "<|pad|>", "<|bos|>", "<|end|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, BOS, END, USER, ASSISTANT]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def prompt_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    """A prompt as chat messages: the system message (when given), then the user turn."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": prompt}]


def chat_text(tokenizer: Any, prompt: str, response: str | None = None, system: str | None = None) -> str:
    """The chat-formatted text of a prompt (with the generation prompt) or of a whole exchange, after the
    recipe's system message when one is given (`policy.system_prompt`)."""
    messages = prompt_messages(prompt, system)
    if response is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(messages, tokenize=False)


def system_params(system: str | None) -> dict[str, str]:
    """The system message as a manifest entry (`system_prompt`), or nothing when there is none."""
    return {"system_prompt": system} if system else {}


def check_system_prompt(tokenizer: Any, system: str | None, max_length: int, room: int = 16) -> int:
    """The tokens the system message adds to a chat-formatted prompt; `ValueError` when it leaves fewer than
    `room` tokens of `max_length` (dpo.max_length) for the prompt and the answer."""
    if system is None:
        return 0
    with_system = len(
        tokenizer(chat_text(tokenizer, "", system=system), add_special_tokens=False)["input_ids"]
    )
    without = len(tokenizer(chat_text(tokenizer, ""), add_special_tokens=False)["input_ids"])
    added = max(0, with_system - without)
    if with_system + room > max_length:
        raise ValueError(
            f"policy.system_prompt is {added} tokens ({with_system} with the chat template): it leaves no room for "
            f"the prompt and the answer within dpo.max_length={max_length}; shorten it or raise dpo.max_length"
        )
    return added
