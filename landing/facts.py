"""The facts the landing page shows, gathered once per request from settings and the route table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from access import Access
from proxy.routes import Route
from proxy.settings import Settings

# What each built-in prefix serves, by the credential group of its route.
_KINDS = {"openai": "OpenAI API", "anthropic": "Anthropic API", "gemini": "Gemini API"}
_EXAMPLE = {"role": "user", "content": "Hello!"}


@dataclass(frozen=True)
class RouteFact:
    prefix: str  # "/v1"
    serves: str  # "OpenAI API", or "custom route" for ROUTES entries


@dataclass(frozen=True)
class Facts:
    status: str
    version: str
    base_url: str  # this deployment as the client reached it, e.g. "https://relay.example.com"
    openai_base_url: str  # what to paste as an OpenAI SDK's base URL
    relay_key_required: bool
    routes: list[RouteFact]
    endpoints: list[str]  # the relay's own endpoints (health check, session chat, balance...)
    snippets: dict[str, str]

    def as_json(self) -> dict:
        return asdict(self)


def gather(
    settings: Settings,
    access: Access,
    routes: Mapping[str, Route],
    endpoints: Iterable[str],
    environ: dict,
    version: str,
) -> Facts:
    base_url = access.proxies.public_base_url(environ)
    relay_key_required = access.requires_relay_key
    return Facts(
        status="ok",
        version=version,
        base_url=base_url,
        openai_base_url=f"{base_url}/v1",
        relay_key_required=relay_key_required,
        routes=[RouteFact(f"/{r.prefix}", _KINDS.get(r.key_group, "custom route")) for r in routes.values()],
        endpoints=sorted(set(endpoints)),
        snippets=_snippets(base_url, relay_key_required, settings.session_model),
    )


def _snippets(base_url: str, relay_key_required: bool, model: str) -> dict[str, str]:
    variable = "RELAY_KEY" if relay_key_required else "OPENAI_API_KEY"
    body = json.dumps({"model": model, "messages": [_EXAMPLE]})
    curl = (
        f"curl {base_url}/v1/chat/completions \\\n"
        f'  -H "Authorization: Bearer ${variable}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'"
    )
    python = (
        "import os\n"
        "from openai import OpenAI\n\n"
        "client = OpenAI(\n"
        f'    base_url="{base_url}/v1",\n'
        f'    api_key=os.environ["{variable}"],\n'
        ")\n"
        "reply = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Hello!"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)"
    )
    return {"curl": curl, "python": python}
