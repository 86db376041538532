"""Answer a prompt with a channel's live version (through the serving backend: the embedded
model server or the inference engines) and record the answer as an output of that version,
routed into review like any other traffic."""

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from core.permissions import require
from datasets_app.selectors import dataset_version_system_prompt
from governance.errors import GovernanceForbidden, InvalidGovernanceRequest
from governance.models import Channel
from reviews.models import Output
from reviews.services import outputs_ingest
from serving.backends import serving_backend
from training_app.errors import TransitionRefused
from training_app.models import ModelVersion


def _conf(key: str) -> Any:
    return settings.SIGNOFF_GOVERNANCE[key]


def _messages(prompt: Any) -> list[dict[str, str]]:
    limit = _conf("PROMPT_MAX_CHARS")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidGovernanceRequest("The prompt is empty.", field="prompt")
        if len(prompt) > limit:
            raise InvalidGovernanceRequest(f"At most {limit} characters.", field="prompt")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt:
        total = 0
        for index, message in enumerate(prompt):
            if (
                not isinstance(message, dict)
                or set(message) != {"role", "content"}
                or message["role"] not in {"system", "user", "assistant"}
                or not isinstance(message["content"], str)
            ):
                raise InvalidGovernanceRequest(
                    "Each message is {role: system|user|assistant, content: text}.",
                    field=f"prompt[{index}]",
                )
            total += len(message["content"])
        if total > limit:
            raise InvalidGovernanceRequest(f"At most {limit} characters.", field="prompt")
        if prompt[-1]["role"] != "user":
            raise InvalidGovernanceRequest("The last message is the user's.", field="prompt")
        return [dict(m) for m in prompt]
    raise InvalidGovernanceRequest("A prompt is text or a list of chat messages.", field="prompt")


def _as_trained(messages: list[dict[str, str]], version: ModelVersion) -> list[dict[str, str]]:
    """The messages with the system message the version was trained with in front, unless the
    caller sent a system message of its own: a version trained on [system, user, assistant]
    answers as trained only when asked the same way."""
    if messages[0]["role"] == "system":
        return messages
    system = dataset_version_system_prompt(version_id=version.dataset_version_id)
    return [{"role": "system", "content": system}, *messages] if system else messages


def channel_generate_check(*, user: AbstractBaseUser, channel: Channel, prompt: Any) -> Any:
    """The checks `channel_generate` makes before asking the model, with no side effect: the
    page runs them before queueing the question, so a refusal shows at once."""
    require(
        user,
        "channel.generate",
        GovernanceForbidden("Only ML engineers, deployers and admins call channels."),
    )
    _messages(prompt)
    channel = Channel.objects.select_related("live_version").get(pk=channel.pk)
    if channel.live_version is None:
        raise TransitionRefused(f"Nothing is live on {channel.name}: deploy a version first.")
    return channel.live_version


def channel_generate(
    *,
    user: AbstractBaseUser,
    channel: Channel,
    prompt: Any,
    max_new_tokens: int | None = None,
    external_id: str | None = None,
    timeout: float | None = None,
) -> tuple[Output, dict[str, Any]]:
    """The live version's answer, recorded (and routed) as an output of that version.

    `external_id`: the output's id in its source; a background job passes one of its own, so
    that running it twice records one output. `timeout`: how long to wait for the model
    server or engine (default SERVING_TIMEOUT_SECONDS)."""
    require(
        user,
        "channel.generate",
        GovernanceForbidden("Only ML engineers, deployers and admins call channels."),
    )
    messages = _messages(prompt)
    limit = _conf("GENERATE_MAX_NEW_TOKENS")
    if max_new_tokens is None:
        max_new_tokens = limit
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise InvalidGovernanceRequest("An integer.", field="max_new_tokens")
    if not 1 <= max_new_tokens <= limit:
        raise InvalidGovernanceRequest(f"From 1 to {limit}.", field="max_new_tokens")
    channel = Channel.objects.select_related("live_version__base_model").get(pk=channel.pk)
    version = channel.live_version
    if version is None:
        raise TransitionRefused(f"Nothing is live on {channel.name}: deploy a version first.")
    messages = _as_trained(messages, version)
    answer = serving_backend().generate(
        version=version,
        messages=messages,
        max_new_tokens=max_new_tokens,
        timeout=timeout or _conf("SERVING_TIMEOUT_SECONDS"),
    )
    result = outputs_ingest(
        payload={
            "external_id": external_id or f"{channel.name}-{uuid.uuid4().hex}",
            "source": f"channel:{channel.name}",
            "model_name": version.base_model.name,
            "model_version": version.name,
            "input": messages,
            "output": answer["text"] or "(empty answer)",
            "confidence": answer["confidence"],
            "metadata": {
                "channel": channel.name,
                "model_version_id": str(version.pk),
                "manifest_digest": answer["manifest_digest"],
                "seconds": answer["seconds"],
                "tokens": answer["tokens"],
                **({"engine": answer["engine"]} if answer.get("engine") else {}),
            },
        },
        actor=user,
    )
    return result.outputs[0], answer
